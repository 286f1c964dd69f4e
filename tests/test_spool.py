"""The result spool: order, markers, capacity, reopening, SIGKILL, corruption and async use."""

from __future__ import annotations

import asyncio
import logging
import os
import select
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path
from types import MappingProxyType
from typing import Any

import pytest

from agent.spool import Spool
from tests import children
from tests.conftest import ROOT


def rows(start: int, count: int) -> list[dict[str, Any]]:
    return [
        {
            "canary": "web",
            "check": "api",
            "started_at": "2026-05-09T07:35:25+00:00",
            "duration_ms": 12.5,
            "status": "ok",
            "code": "HTTP_200",
            "message": f"row {n}",
            "phases": {"dns_ms": 1.0, "connect_ms": 2.0},
            "seq": n,
        }
        for n in range(start, start + count)
    ]


def seqs(batch: list[dict[str, Any]]) -> list[int]:
    return [row["seq"] for row in batch]


@pytest.fixture
def spool_path(tmp_path: Path) -> Path:
    return tmp_path / "state" / "spool.db"


def test_append_peek_ack_keeps_order_and_markers(spool_path: Path) -> None:
    with Spool(spool_path, capacity=100) as spool:
        assert spool_path.exists()
        assert spool.peek(10) == (0, [])
        assert spool.append(rows(0, 3)) == 0
        assert spool.append(rows(3, 4)) == 0
        assert spool.append([]) == 0
        assert spool.depth() == 7

        marker, batch = spool.peek(5)
        assert batch == rows(0, 5)
        assert spool.peek(5) == (marker, batch), "peek removes nothing"
        spool.ack(marker)
        assert spool.depth() == 2

        marker2, batch2 = spool.peek(5)
        assert seqs(batch2) == [5, 6]
        assert marker2 > marker
        spool.ack(marker2)
        assert spool.depth() == 0
        assert spool.peek(5) == (0, [])
        assert spool.dropped_total == 0


def test_append_accepts_any_mapping_and_rejects_what_json_cannot_encode(spool_path: Path) -> None:
    with Spool(spool_path, capacity=10) as spool:
        spool.append([MappingProxyType({"canary": "web", "seq": 1})])
        with pytest.raises(TypeError):
            spool.append([{"seq": 2}, {"seq": 3, "bad": object()}])
        assert spool.depth() == 1, "a batch that cannot be encoded stores nothing"
        assert spool.peek(10)[1] == [{"canary": "web", "seq": 1}]


def test_capacity_drops_the_oldest_rows_and_counts_them(
    spool_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    with Spool(spool_path, capacity=5) as spool:
        assert spool.append(rows(0, 3)) == 0
        with caplog.at_level(logging.WARNING, logger="agent.spool"):
            assert spool.append(rows(3, 4)) == 2
        assert "full" in caplog.text
        assert spool.depth() == 5
        assert spool.dropped_total == 2
        assert seqs(spool.peek(10)[1]) == [2, 3, 4, 5, 6]

        # A batch larger than the capacity keeps only its newest rows.
        assert spool.append(rows(7, 8)) == 5 + 3
        assert spool.depth() == 5
        assert spool.dropped_total == 10
        assert seqs(spool.peek(10)[1]) == [10, 11, 12, 13, 14]

        marker, _ = spool.peek(10)
        spool.ack(marker)
        assert spool.depth() == 0
        assert spool.append(rows(15, 5)) == 0, "room again once the spool is drained"
        assert spool.dropped_total == 10


def test_a_reopened_spool_has_the_unacked_rows_in_order(spool_path: Path) -> None:
    spool = Spool(spool_path, capacity=100)
    spool.append(rows(0, 10))
    marker, _ = spool.peek(4)
    spool.ack(marker)
    spool.close()
    spool.close()

    with Spool(spool_path, capacity=100) as reopened:
        assert reopened.depth() == 6
        marker2, batch = reopened.peek(100)
        assert seqs(batch) == [4, 5, 6, 7, 8, 9]
        assert marker2 > marker
        reopened.ack(marker2)

    with Spool(spool_path, capacity=100) as again:
        assert again.depth() == 0
        again.append(rows(10, 1))
        marker3, _ = again.peek(1)
        assert marker3 > marker2, "row ids never restart, even once the spool was empty"


def test_a_smaller_capacity_on_reopen_trims_on_the_next_append(spool_path: Path) -> None:
    with Spool(spool_path, capacity=100) as spool:
        spool.append(rows(0, 10))
    with Spool(spool_path, capacity=4) as smaller:
        assert smaller.depth() == 10
        assert smaller.append(rows(10, 1)) == 7
        assert seqs(smaller.peek(100)[1]) == [7, 8, 9, 10]


def test_acking_a_stale_marker_is_harmless(spool_path: Path) -> None:
    with Spool(spool_path, capacity=5) as spool:
        spool.ack(0)
        spool.ack(-1)
        spool.ack(10**9)
        spool.append(rows(0, 3))
        assert spool.depth() == 3, "nothing peeked yet: no marker can remove anything"

        first, _ = spool.peek(3)
        spool.ack(first)
        spool.ack(first)
        spool.append(rows(3, 3))
        spool.ack(first)
        assert spool.depth() == 3

        # Rows that were peeked, then dropped for capacity before the ack.
        second, batch = spool.peek(2)
        assert seqs(batch) == [3, 4]
        assert spool.append(rows(6, 4)) == 2
        spool.ack(second)
        assert spool.depth() == 5

        # A marker beyond what peek handed out only removes what was handed out.
        third, batch = spool.peek(2)
        assert seqs(batch) == [5, 6]
        spool.ack(third + 1000)
        assert spool.depth() == 3
        assert seqs(spool.peek(10)[1]) == [7, 8, 9]


CHILD = """
import sys
from pathlib import Path

from agent.spool import Spool

spool = Spool(Path(sys.argv[1]), capacity=10**9)
seq = 0
while True:
    spool.append(
        [{"canary": "web", "check": "api", "seq": seq + i, "message": "x" * 200}
         for i in range(50)]
    )
    seq += 50
    print(seq, flush=True)
"""


def test_a_spool_killed_mid_run_keeps_every_committed_row(spool_path: Path) -> None:
    wanted = 20_000  # more than one WAL checkpoint's worth of rows
    child = children.popen(
        [sys.executable, "-c", CHILD, str(spool_path)],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        bufsize=0,
    )
    assert child.stdout is not None and child.stderr is not None
    reported = 0
    pending = b""
    deadline = time.monotonic() + 60
    try:
        while reported < wanted:
            remaining = deadline - time.monotonic()
            assert remaining > 0, f"the child reported only {reported} rows"
            ready, _, _ = select.select([child.stdout], [], [], remaining)
            if not ready:
                continue
            chunk = os.read(child.stdout.fileno(), 65536)
            if not chunk:
                pytest.fail(f"the child exited: {child.stderr.read().decode()}")
            *lines, pending = (pending + chunk).split(b"\n")
            if lines:
                reported = int(lines[-1])
        os.kill(child.pid, signal.SIGKILL)
    finally:
        child.kill()
        child.wait()
        child.stdout.close()
        child.stderr.close()
    assert child.returncode == -signal.SIGKILL

    with Spool(spool_path, capacity=10**9) as spool:
        depth = spool.depth()
        assert depth >= reported
        assert depth % 50 == 0, "each append is all or nothing"
        _, batch = spool.peek(depth + 1)
        assert spool.dropped_total == 0, "every stored row is intact JSON"
        assert seqs(batch) == list(range(depth))
        assert all(
            row == {"canary": "web", "check": "api", "seq": row["seq"], "message": "x" * 200}
            for row in batch
        )


@pytest.mark.parametrize(
    "content",
    [
        pytest.param(b"\x00garbage\xff" * 1000, id="garbage"),
        pytest.param(b"not a db", id="short"),
        pytest.param(b"SQLite format 3\x00" + bytes(range(256)) * 20, id="bad-header"),
    ],
)
def test_a_corrupt_file_is_moved_aside_and_the_spool_starts_empty(
    spool_path: Path, content: bytes, caplog: pytest.LogCaptureFixture
) -> None:
    spool_path.parent.mkdir(parents=True)
    spool_path.write_bytes(content)
    with caplog.at_level(logging.WARNING, logger="agent.spool"), Spool(spool_path, 10) as spool:
        assert spool.durable
        assert spool.depth() == 0
        spool.append(rows(0, 2))
        assert seqs(spool.peek(10)[1]) == [0, 1]
    assert "corrupt" in caplog.text
    aside = list(spool_path.parent.glob("spool.db.corrupt-*"))
    assert [p.read_bytes() for p in aside] == [content]
    with Spool(spool_path, 10) as reopened:
        assert reopened.depth() == 2


def test_an_unknown_schema_version_is_moved_aside(spool_path: Path) -> None:
    with Spool(spool_path, 10) as spool:
        spool.append(rows(0, 1))
    with sqlite3.connect(spool_path) as conn:
        conn.execute("PRAGMA user_version=99")
    conn.close()
    with Spool(spool_path, 10) as spool:
        assert spool.depth() == 0
    assert len(list(spool_path.parent.glob("spool.db.corrupt-*"))) == 1


def test_corruption_found_while_running_starts_a_new_file(
    spool_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    spool = Spool(spool_path, capacity=1000)
    spool.append(rows(0, 500))
    marker, _ = spool.peek(2)
    other = sqlite3.connect(spool_path, isolation_level=None)
    other.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    size = spool_path.stat().st_size
    with spool_path.open("r+b") as file:
        file.seek(4096)  # keep the header page, wreck the table's pages
        file.write(b"\xff" * (size - 4096))
    other.execute("PRAGMA application_id=1")  # a commit makes the spool drop its page cache
    other.close()

    with caplog.at_level(logging.WARNING, logger="agent.spool"):
        assert spool.append(rows(500, 1)) == 0
    assert "corrupt" in caplog.text
    assert spool.depth() == 1
    assert spool.dropped_total == 500
    assert len(list(spool_path.parent.glob("spool.db.corrupt-*"))) == 1
    spool.ack(marker)
    assert spool.depth() == 1, "a marker from the old file matches nothing in the new one"
    assert seqs(spool.peek(10)[1]) == [500]
    spool.close()


def test_rows_that_are_not_json_objects_are_dropped_and_counted(spool_path: Path) -> None:
    with Spool(spool_path, 10) as spool:
        spool.append(rows(0, 1))
    conn = sqlite3.connect(spool_path, isolation_level=None)
    conn.executemany("INSERT INTO spool (body) VALUES (?)", [(b"{broken",), (b"[1, 2]",)])
    conn.close()
    with Spool(spool_path, 10) as spool:
        spool.append(rows(1, 1))
        assert spool.depth() == 4
        marker, batch = spool.peek(2)
        assert seqs(batch) == [0, 1]
        assert spool.dropped_total == 2
        assert spool.dropped_by_reason == {"spool_full": 0, "spool_corrupt": 2}
        assert spool.depth() == 2
        spool.ack(marker)
        assert spool.depth() == 0


def test_an_uncreatable_file_falls_back_to_memory(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    blocker = tmp_path / "not-a-directory"
    blocker.write_text("")
    with caplog.at_level(logging.WARNING, logger="agent.spool"):
        spool = Spool(blocker / "spool.db", capacity=10)
    assert not spool.durable
    assert "in memory" in caplog.text
    spool.append(rows(0, 2))
    assert seqs(spool.peek(10)[1]) == [0, 1]
    spool.close()


def test_async_wrappers_run_in_call_order_off_the_event_loop(spool_path: Path) -> None:
    spool = Spool(spool_path, capacity=1000)

    async def main() -> None:
        batch = rows(0, 10)
        pending = [spool.append_async(batch[n : n + 2]) for n in range(0, 10, 2)]
        batch.clear()
        batch.extend(rows(100, 3))  # changing the rows after the call changes nothing
        assert await asyncio.gather(*pending) == [0] * 5
        marker, peeked = await spool.peek_async(100)
        assert seqs(peeked) == list(range(10))
        await spool.ack_async(marker)

    asyncio.run(main())
    assert spool.depth() == 0
    spool.close()


def test_appends_interleaved_with_peeks_keep_their_order_and_drop_counts(spool_path: Path) -> None:
    """Many appends in flight at once (they are written in groups): every row is stored once,
    in call order; a peek queued between appends sees exactly the rows appended before it;
    the drops reported add up to what the capacity forced out."""
    spool = Spool(spool_path, capacity=50)

    async def main() -> tuple[list[int], list[int], list[int]]:
        first = [spool.append_async(rows(n, 1)) for n in range(30)]
        peek = spool.peek_async(100)
        second = [spool.append_async(rows(n, 1)) for n in range(30, 80)]
        drops_first = await asyncio.gather(*first)
        _, peeked = await peek
        drops_second = await asyncio.gather(*second)
        return drops_first, seqs(peeked), drops_second

    drops_first, peeked, drops_second = asyncio.run(main())
    assert peeked == list(range(30))
    assert sum(drops_first) == 0
    assert sum(drops_second) == 30 and spool.dropped_total == 30
    assert seqs(spool.peek(100)[1]) == list(range(30, 80))
    spool.close()


def test_arguments_and_closed_spools_are_checked(spool_path: Path) -> None:
    with pytest.raises(ValueError):
        Spool(spool_path, capacity=0)
    spool = Spool(spool_path, capacity=1)
    with pytest.raises(ValueError):
        spool.peek(0)
    spool.close()
    for call in (lambda: spool.append(rows(0, 1)), lambda: spool.peek(1), lambda: spool.ack(1)):
        with pytest.raises(ValueError, match="closed"):
            call()


def test_peek_ids_lets_a_sender_ack_a_batch_part_by_part(spool_path: Path) -> None:
    with Spool(spool_path, capacity=100) as spool:
        spool.append(rows(0, 6))
        ids, batch = spool.peek_ids(4)
        assert seqs(batch) == [0, 1, 2, 3]
        assert ids == sorted(ids) and len(set(ids)) == 4
        assert spool.peek(4) == (ids[-1], batch), "peek's marker is the last row's"
        spool.ack(ids[1])  # the first half was delivered; the second is still being sent
        assert seqs(spool.peek(10)[1]) == [2, 3, 4, 5]
        assert spool.peek_ids(10)[0][:2] == ids[2:]


def test_a_full_spool_logs_when_it_fills_and_when_it_has_room_not_per_row(
    spool_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    with Spool(spool_path, capacity=5) as spool, caplog.at_level(logging.WARNING, "agent.spool"):
        for n in range(50):
            spool.append(rows(n, 1))
        assert spool.dropped_by_reason == {"spool_full": 45, "spool_corrupt": 0}
        marker, _ = spool.peek(5)
        spool.ack(marker)
        spool.append(rows(50, 1))
    lines = [record.getMessage() for record in caplog.records]
    assert len(lines) == 2, lines
    assert "is full (5 rows)" in lines[0]
    assert lines[1].endswith("has room again: 45 rows were dropped while it was full")


def _agent_run(spool: Path, tmp_path: Path) -> subprocess.CompletedProcess[str]:
    """`agent run` with `--spool`, against a control plane that is not there."""
    environ = {**os.environ, "AGENT_TOKEN": "cra_x.y", "RECONCILER_URL": "http://127.0.0.1:1"}
    return subprocess.run(
        [sys.executable, "-m", "agent", "run", "--spool", str(spool), "--listen", "off"],
        cwd=tmp_path, env=environ, capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip


def test_a_spool_path_naming_a_file_of_someone_else_is_refused_and_left_alone(
    tmp_path: Path,
) -> None:
    """The agent moves a damaged spool aside: a --spool naming another file by mistake renamed
    it (/etc/passwd was replaced by a spool). Now the agent stops at start and touches nothing."""
    text = tmp_path / "passwd"
    text.write_text("root:x:0:0:root:/root:/bin/bash\n")
    other = tmp_path / "app.db"
    with sqlite3.connect(other) as conn:
        conn.execute("CREATE TABLE users (id INTEGER)")
    conn.close()
    before = other.read_bytes()
    for path, said in (
        (text, "the file is not a SQLite file, so not an agent spool"),
        (other, "the file is a SQLite database with other tables (users), not a spool"),
        (tmp_path, "the file is a directory"),
    ):
        refused = _agent_run(path, tmp_path)
        assert refused.returncode != 0 and f"--spool {path}: {said}" in refused.stderr
    assert text.read_text() == "root:x:0:0:root:/root:/bin/bash\n"
    assert other.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["app.db", "passwd"]


@pytest.mark.parametrize("content", [b"", b"\x00" * 4096], ids=["empty", "zeroed by a crash"])
def test_an_empty_or_zeroed_spool_is_still_taken_as_the_agents_own(
    spool_path: Path, content: bytes
) -> None:
    from agent.settings import load_settings

    spool_path.parent.mkdir(parents=True)
    spool_path.write_bytes(content)
    settings = load_settings({"url": "http://x", "spool": str(spool_path)}, {"AGENT_TOKEN": "t"})
    assert settings.spool == spool_path
    with Spool(spool_path, 10) as spool:  # and the spool's own recovery takes it from there
        assert spool.durable and spool.depth() == 0
