"""Schemathesis over `/openapi.json`: every operation, with every kind of token, answers
without a 5xx, and nothing but a refusal without the token it needs.

A few generated examples per operation (valid and invalid bodies and parameters), each sent
with no token, the read token, an agent's token and the admin token, to one in-process server.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
import schemathesis
from fastapi import FastAPI
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis.strategies import one_of
from schemathesis import GenerationMode
from schemathesis.generation.case import Case
from schemathesis.schemas import BaseSchema

from reconciler.server.http.app import ROUTERS
from tests.conftest import ConfigRepo, agent_doc, canary_doc, region_doc
from tests.inprocess import BASE_URL, InProcessServer, running_in_process
from tests.server import ADMIN_TOKEN
from tests.test_server_parts import ROUTE

READ_TOKEN = "fuzz-read-token"
EXAMPLES = 4
PUBLIC = {"/healthz", "/readyz", "/metrics", "/hooks/git"}


@pytest.fixture(scope="module")
def fuzzed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[InProcessServer, str]]:
    root = tmp_path_factory.mktemp("fuzz")
    repo = ConfigRepo(root / "config")
    repo.write("regions.yaml", region_doc("eu"))
    repo.write("agents.yaml", agent_doc("eu-1", "eu"))
    repo.write("canaries/web.yaml", canary_doc("web"))
    repo.write("routes/checkout.yaml", ROUTE)
    repo.commit("initial")
    env = {"RECONCILER_READ_TOKEN": READ_TOKEN}
    with running_in_process(repo.path, root / "state.duckdb", env) as server:
        server.wait_ready()
        yield server, server.token("eu-1")


@pytest.fixture(scope="module")
def api_schema(fuzzed: tuple[InProcessServer, str]) -> BaseSchema:
    server, _ = fuzzed
    document = server.client.get("/openapi.json").json()
    return schemathesis.openapi.from_dict(document)


def _operations() -> list[tuple[str, str]]:
    """Every operation the app serves, known without a server (for the test ids)."""
    app = FastAPI()
    for router in ROUTERS:
        app.include_router(router)
    paths: dict[str, dict[str, Any]] = app.openapi()["paths"]
    return [(method.upper(), path) for path, methods in paths.items() for method in methods]


def needs(method: str, path: str) -> str:
    """The one token an operation answers with data for: public, read, agent or admin."""
    if path in PUBLIC:
        return "public"
    if path.startswith("/api/agent/"):
        return "agent"
    if path.startswith("/api/v1/") or (path == "/canary" and method == "GET"):
        return "read"
    return "admin"


@pytest.mark.parametrize(("method", "path"), _operations())
def test_no_operation_fails_or_answers_without_its_token(
    method: str, path: str, fuzzed: tuple[InProcessServer, str], api_schema: BaseSchema
) -> None:
    server, agent_token = fuzzed
    tokens = {"none": None, "read": READ_TOKEN, "agent": agent_token, "admin": ADMIN_TOKEN}
    if path == "/api/site/build":
        del tokens["admin"]  # it builds a site wherever `out` says: covered by its own tests
    required = needs(method, path)
    operation = api_schema[path][method]
    strategies = [operation.as_strategy(mode) for mode in GenerationMode]

    @given(case=one_of(strategies))
    @settings(
        max_examples=EXAMPLES,
        deadline=None,
        database=None,
        phases=[Phase.generate],
        suppress_health_check=list(HealthCheck),
    )
    def send(case: Case) -> None:
        for mode, token in tokens.items():
            headers = {"Authorization": f"Bearer {token}"} if token else {}
            request = case.as_transport_kwargs(base_url=BASE_URL, headers=headers)
            request.pop("cookies", None)
            if "data" in request:
                request["content"] = request.pop("data")
            response = server.client.request(**request)
            described = f"{mode} token: {method} {case.formatted_path} -> {response.status_code}"
            assert response.status_code < 500, f"{described}\n{response.text[:500]}"
            if required not in ("public", mode):
                assert response.status_code >= 400, f"answered without its token: {described}"

    send()


def test_the_schema_documents_bodies_parameters_and_errors(
    fuzzed: tuple[InProcessServer, str],
) -> None:
    server, _ = fuzzed
    document = server.client.get("/openapi.json").json()
    operations = [
        (method, path, operation)
        for path, methods in document["paths"].items()
        for method, operation in methods.items()
    ]
    assert len(operations) >= 29
    takes_no_body = (
        "/canary/{route}/{action}",
        "/operator/agents/{name}/token",
        "/operator/maintenance/{name}/close",
    )
    for method, path, operation in operations:
        if method in ("post", "patch") and path not in takes_no_body:
            assert "requestBody" in operation, (method, path)
        if path not in ("/healthz", "/metrics"):
            assert any(status >= "400" for status in operation["responses"]), (method, path)
    results = document["paths"]["/api/v1/targets/{id}/results"]["get"]
    assert {p["name"] for p in results["parameters"]} >= {"since", "until", "region", "limit"}
