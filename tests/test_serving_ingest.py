"""Config pulls served before FastAPI's router and ingest's group commit, as an operator sees
them: the same answers, counted on /metrics by route, and rows per insert measurable."""

from __future__ import annotations

import asyncio
import gc
import re
import weakref
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest

from reconciler.core.agentconfig import AgentConfig
from reconciler.core.ingest import validate_rows
from tests.conftest import ConfigRepo, agent_doc, canary_doc, region_doc
from tests.inprocess import serving, until_ready

pytestmark = pytest.mark.anyio

TARGETS = "/api/agent/targets"


@pytest.fixture
def repo(config_repo: ConfigRepo) -> ConfigRepo:
    config_repo.write("regions.yaml", region_doc("eu"))
    config_repo.write("agents.yaml", agent_doc("eu-1", "eu"))
    config_repo.write("canaries/web.yaml", canary_doc("web", selector="['*']"))
    config_repo.commit("initial")
    return config_repo


def counter(metrics: str, series: str) -> float:
    """One series' value in Prometheus text (0 when absent)."""
    found = re.search(rf"^reconciler_{re.escape(series)} (\S+)$", metrics, re.MULTILINE)
    return float(found.group(1)) if found else 0.0


def row(seconds_ago: float, **overrides: Any) -> dict[str, Any]:
    started = datetime.now(UTC) - timedelta(seconds=seconds_ago)
    return {
        "canary": "default/web@eu-1",
        "check": "check",
        "started_at": started.isoformat(),
        "duration_ms": 12.5,
        "status": "pass",
        "code": 200,
        "phases": {"connect_ms": 1, "total_ms": 12.5},
    } | overrides


async def test_pulls_answer_and_are_counted_by_route_and_status(
    repo: ConfigRepo, tmp_path: Path
) -> None:
    async with serving(repo.path, tmp_path / "state.duckdb") as (parts, client):
        await until_ready(parts)
        token = await parts.control.mint_token("eu-1")
        auth = {"Authorization": f"Bearer {token}"}
        first = await client.get(TARGETS, headers=auth)
        assert first.status_code == 200
        assert first.headers["content-type"] == "application/json"
        assert orjson.loads(first.content)["agent"] == "eu-1"
        again = await client.get(TARGETS, headers=auth | {"If-None-Match": first.headers["etag"]})
        assert (again.status_code, again.content) == (304, b"")
        assert again.headers["etag"] == first.headers["etag"]
        refused = await client.get(TARGETS, headers={"Authorization": "Bearer cra_eu-1.nope"})
        assert refused.status_code == 401
        assert refused.headers["www-authenticate"] == "Bearer"
        assert "error" in refused.json()
        bad_wait = await client.get(TARGETS, headers=auth, params={"wait": "soon"})
        assert bad_wait.status_code == 400
        assert "wait" in bad_wait.json()["error"]
        # Every other route still goes through FastAPI's router and is counted too.
        assert (await client.get("/no/such/path")).status_code == 404
        metrics = (await client.get("/metrics")).text
    route = 'http_request_duration_seconds_count{route="/api/agent/targets",status="%s"}'
    assert counter(metrics, route % "2xx") == 1
    assert counter(metrics, route % "3xx") == 1
    assert counter(metrics, route % "4xx") == 2
    assert (
        counter(metrics, 'http_request_duration_seconds_count{route="unmatched",status="4xx"}') == 1
    )


async def test_concurrent_batches_share_inserts_and_every_row_is_counted(
    repo: ConfigRepo, tmp_path: Path
) -> None:
    requests, size = 12, 50
    async with serving(repo.path, tmp_path / "state.duckdb") as (parts, client):
        await until_ready(parts)
        token = await parts.control.mint_token("eu-1")

        # One clock reading for every row: rows read from the clock batch by batch could
        # come out equal to the microsecond (and be stored once, as duplicates should).
        base = datetime.now(UTC)

        async def send(batch: int) -> httpx.Response:
            rows = [
                row(0)
                | {
                    "started_at": (
                        base - timedelta(milliseconds=1000 + batch * size + i)
                    ).isoformat()
                }
                for i in range(size)
            ]
            return await client.post(
                "/api/agent/results",
                headers={"Authorization": f"Bearer {token}"},
                content=orjson.dumps({"results": rows}),
            )

        answers = await asyncio.gather(*(send(batch) for batch in range(requests)))
        text = (await client.get("/metrics")).text
    assert [a.json()["accepted"] for a in answers] == [size] * requests
    inserts = counter(text, "ingest_inserts_total")
    assert 1 <= inserts <= requests
    assert counter(text, "ingest_insert_requests_total") == requests
    assert counter(text, "ingest_insert_rows_total") == requests * size


def test_a_malformed_row_among_good_ones_drops_only_itself() -> None:
    now = datetime.now(UTC)
    config = AgentConfig(
        agent="eu-1",
        region="eu",
        body=b"{}",
        etag='"x"',
        canaries=frozenset({"default/web@eu-1"}),
        checks={"default/web@eu-1": {"check": "http"}},
    )
    rows = [row(1), row(2, status="maybe"), {"canary": "default/web@eu-1"}, row(3)]
    verdict = validate_rows(rows, config, now)
    assert dict(verdict.dropped) == {"malformed": 2}
    assert len(verdict.accepted) == 2
    # Phases are stored as the model reads them (an integer in a float field is a float),
    # with the absent ones left out.
    assert (
        verdict.accepted.table["phases"].to_pylist() == ['{"connect_ms":1.0,"total_ms":12.5}'] * 2
    )


def test_the_time_window_holds_in_every_offset_a_row_uses() -> None:
    now = datetime.now(UTC)
    config = AgentConfig(
        agent="eu-1",
        region="eu",
        body=b"{}",
        etag='"x"',
        canaries=frozenset({"default/web@eu-1"}),
        checks={"default/web@eu-1": {"check": "http"}},
    )
    plus5, minus3 = timezone(timedelta(hours=5)), timezone(timedelta(hours=-3))

    def at(moment: datetime) -> dict[str, Any]:
        return row(0, started_at=moment.isoformat())

    rows = [
        at(now - timedelta(seconds=1)),
        at((now + timedelta(minutes=6)).astimezone(plus5)),  # beyond the 5 min skew
        at((now + timedelta(minutes=4)).astimezone(minus3)),  # within it
        at((now - timedelta(hours=25)).astimezone(minus3)),  # older than 24 h
        at((now - timedelta(hours=23)).astimezone(plus5)),
        at((now - timedelta(seconds=5)).replace(tzinfo=None)),  # no offset
    ]
    verdict = validate_rows(rows, config, now)
    assert dict(verdict.dropped) == {"clock_skew": 1, "too_old": 1, "malformed": 1}
    assert len(verdict.accepted) == 3


def test_a_replaced_config_is_not_kept_alive_by_ingest() -> None:
    """Each commit gives an agent a new config (its whole body): validating rows against it
    must not keep the previous ones in memory."""

    def config(etag: str) -> AgentConfig:
        return AgentConfig(
            agent="eu-1",
            region="eu",
            body=b"x" * 100_000,
            etag=etag,
            canaries=frozenset({"default/web@eu-1"}),
            checks={"default/web@eu-1": {"check": "http"}},
        )

    now = datetime.now(UTC)
    first = config('"1"')
    assert len(validate_rows([row(1)], first, now).accepted) == 1
    gone = weakref.ref(first)
    del first
    second = config('"2"')
    assert len(validate_rows([row(1), row(2)], second, now).accepted) == 2
    gc.collect()
    assert gone() is None
