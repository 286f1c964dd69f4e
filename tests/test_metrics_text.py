"""The server's and the agent's /metrics text (`agent/metrics.py`), read back as Prometheus'
own text parser reads it."""

from __future__ import annotations

import math

from prometheus_client.parser import text_string_to_metric_families

from agent.metrics import Metrics


def read_back(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def test_a_counter_past_a_million_reads_back_exactly() -> None:
    metrics = Metrics()
    metrics.count("ingest_rows_total", 1_234_567, outcome="accepted")
    metrics.count("ingest_rows_total", 1, outcome="accepted")
    samples = read_back(metrics.render())
    # Six significant digits would read 1234570: a rate() over it steps every few minutes.
    assert samples[("reconciler_ingest_rows_total", (("outcome", "accepted"),))] == 1_234_568


def test_a_timestamp_gauge_keeps_its_seconds_and_fractions() -> None:
    built = 1_796_571_317.575
    samples = read_back(Metrics().render([("site_last_build_timestamp_seconds", "", (), built)]))
    assert samples[("reconciler_site_last_build_timestamp_seconds", ())] == built


def test_a_histogram_sum_and_counts_read_back_exactly() -> None:
    metrics = Metrics()
    for _ in range(1_500_000):
        metrics.observe("http_request_duration_seconds", 0.0004, route="/x", status="2xx")
    metrics.observe("http_request_duration_seconds", 3.0, route="/x", status="2xx")
    samples = read_back(metrics.render())
    key = (("route", "/x"), ("status", "2xx"))
    assert samples[("reconciler_http_request_duration_seconds_count", key)] == 1_500_001
    fast = (("le", "0.001"), *key)
    assert samples[("reconciler_http_request_duration_seconds_bucket", fast)] == 1_500_000
    assert math.isclose(
        samples[("reconciler_http_request_duration_seconds_sum", key)], 1_500_000 * 0.0004 + 3.0
    )


def test_label_values_with_quotes_backslashes_and_newlines_read_back() -> None:
    metrics = Metrics()
    name = 'notify-url "ops"\\team\nsecond line'
    metrics.count("notification_deliveries_total", receiver=name, outcome="failed")
    samples = read_back(metrics.render())
    key = (("outcome", "failed"), ("receiver", name))
    assert samples[("reconciler_notification_deliveries_total", key)] == 1


def test_infinite_and_undefined_values_are_written_as_prometheus_spells_them() -> None:
    text = Metrics().render(
        [("a", "", (), math.inf), ("b", "", (), -math.inf), ("c", "", (), math.nan)]
    )
    assert "reconciler_a +Inf\n" in text and "reconciler_b -Inf\n" in text
    samples = read_back(text)
    assert samples[("reconciler_a", ())] == math.inf
    assert math.isnan(samples[("reconciler_c", ())])


def test_a_computed_count_since_start_is_typed_counter_as_its_name_says() -> None:
    """The agent's `agent_dropped_rows_total` is computed at each scrape; typed gauge, its
    `_total` name made `promtool check metrics` complain, and `rate()` users guess."""
    metrics = Metrics(prefix="agent")
    text = metrics.render(
        [
            ("dropped_rows_total", "Rows lost.", (("reason", "spool_full"),), 3.0),
            ("spool_rows", "Rows waiting.", (), 7.0),
        ]
    )
    families = {family.name: family.type for family in text_string_to_metric_families(text)}
    assert families == {"agent_dropped_rows": "counter", "agent_spool_rows": "gauge"}
    assert read_back(text)[("agent_dropped_rows_total", (("reason", "spool_full"),))] == 3.0
