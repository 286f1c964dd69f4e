"""Files pasted from the reference products load unchanged."""

from __future__ import annotations

from reconciler.core.documents import SourceFile
from reconciler.core.load import load_config
from reconciler.core.weights import step_schedule

SEED_003_GATEWAY = b"""
routes:
  - id: api
    path: /api
    path_prefix: true
    traffic_split:
      - name: stable
        weight: 95
        backends:
          - url: http://v1:8080
      - name: canary
        weight: 5
        backends:
          - url: http://v2:8080
    canary:
      enabled: true
      canary_group: canary
      auto_start: true
      steps:
        - weight: 5
          pause: 5m
        - weight: 25
          pause: 10m
        - weight: 50
          pause: 15m
        - weight: 100
      analysis:
        error_threshold: 0.05           # rollback if > 5% errors (absolute)
        latency_threshold: 500ms        # rollback if p99 > 500ms (absolute)
        max_error_rate_increase: 1.5    # rollback if canary errors > 1.5x baseline
        max_latency_increase: 2.0       # rollback if canary p99 > 2x baseline
        max_failures: 3                 # tolerate up to 2 consecutive bad evals
        min_requests: 100               # skip evaluation below this count
        interval: 30s                   # evaluation frequency
"""

CANARY_CHECKER = b"""
apiVersion: canaries.flanksource.com/v1
kind: Canary
metadata:
  name: api-health
  namespace: monitoring
spec:
  schedule: '@every 1m'
  http:
    - name: api-endpoint
      url: http://api-service.default.svc.cluster.local:8080/health
      responseCodes: [200]
      test:
        expr: json.status == 'healthy'
  agentSelector:
    - '*' # Run on all agents
"""


def test_seed_003_gateway_file_loads_verbatim() -> None:
    result = load_config([SourceFile("gateway.yaml", "sha", lambda: SEED_003_GATEWAY)])
    assert result.ok, [d.format() for d in result.diagnostics]
    route = result.config.routes["api"]
    assert route.model.spec.canary is not None
    assert route.model.spec.canary.analysis.min_requests == 100
    schedule = step_schedule("api", route.model.spec)
    assert schedule is not None
    assert [s.weights["stable"] for s in schedule.steps] == [95, 75, 50, 0]


def test_canary_checker_canary_loads_unchanged() -> None:
    result = load_config([SourceFile("canary.yaml", "sha", lambda: CANARY_CHECKER)])
    assert result.ok, [d.format() for d in result.diagnostics]
    canary = result.config.canaries["monitoring/api-health"]
    assert canary.model.spec.agentSelector == ["*"]


def test_max_response_time_is_an_alias_of_threshold_millis() -> None:
    with_alias = CANARY_CHECKER.replace(b"responseCodes: [200]", b"maxResponseTime: 500")
    result = load_config([SourceFile("canary.yaml", "sha", lambda: with_alias)])
    [canary] = result.config.canaries.values()
    assert canary.model.spec.http[0].thresholdMillis == 500


def test_gateway_file_errors_point_into_the_routes_list() -> None:
    broken = SEED_003_GATEWAY.replace(b"canary_group: canary", b"canary_group: canari")
    result = load_config([SourceFile("gateway.yaml", "sha", lambda: broken)])
    [error] = result.diagnostics
    assert error.format() == (
        "gateway.yaml:17:7: Route/api: routes[0].canary.canary_group: 'canari' is not a "
        "traffic_split group (groups: canary, stable)"
    )


def test_both_names_of_one_field_is_a_clear_error() -> None:
    both = CANARY_CHECKER.replace(
        b"responseCodes: [200]", b"maxResponseTime: 500\n      thresholdMillis: 400"
    )
    result = load_config([SourceFile("canary.yaml", "sha", lambda: both)])
    [error] = result.diagnostics
    assert error.field == "spec.http[0].maxResponseTime"
    assert error.message == (
        "'maxResponseTime' names a field that is already set under another name; keep one"
    )


def test_a_document_that_is_not_a_mapping_says_what_it_got() -> None:
    result = load_config([SourceFile("list.yaml", "sha", lambda: b"- a\n- b\n")])
    [error] = result.diagnostics
    assert error.message == "expected a mapping with apiVersion and kind, got a list"
