"""icmp checks: real echo requests to 127.0.0.1 and ::1, loss and latency limits, and the
error that names what is missing when no ICMP socket may be opened."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import socket
import subprocess
import sys
from datetime import UTC, datetime
from typing import Any

import orjson
import pytest

from agent.checks import CheckOutcome, ClientPool, result_row, run_check
from agent.checks.icmp_check import PingSpec, ping_verdict
from agent.checks.icmp_socket import checksum, echo_request, unavailable_message
from agent.checks.series import CheckSeries
from reconciler.core.agentconfig import agent_configs
from reconciler.core.compile import compile_config
from reconciler.core.documents import SourceFile
from reconciler.core.load import load_config
from tests.conftest import ROOT

NOW = datetime(2030, 1, 2, 3, 4, 5, tzinfo=UTC)


def icmp(endpoint: str, **fields: Any) -> dict[str, Any]:
    return {
        "name": "ping",
        "type": "icmp",
        "timeout_ms": 3000,
        "endpoint": endpoint,
        "packetCount": 3,
        "interval": "10ms",
        **fields,
    }


def _run(check: dict[str, Any]) -> CheckOutcome:
    async def main() -> CheckOutcome:
        async with ClientPool(size=1, trust_env=False) as pool:
            return await run_check(check, pool, lambda: NOW)

    return asyncio.run(main())


def _can_ping() -> bool:
    for kind in (socket.SOCK_DGRAM, socket.SOCK_RAW):
        try:
            socket.socket(socket.AF_INET, kind, socket.IPPROTO_ICMP).close()
            return True
        except PermissionError:
            continue
    return False


needs_icmp = pytest.mark.skipif(not _can_ping(), reason="no ICMP socket may be opened here")


def _has_ipv6_loopback() -> bool:
    try:
        with socket.socket(socket.AF_INET6, socket.SOCK_DGRAM) as sock:
            sock.bind(("::1", 0))
        return True
    except OSError:
        return False


@needs_icmp
def test_pinging_loopback_passes_with_packet_counts_and_round_trip_times() -> None:
    outcome = _run(icmp("127.0.0.1", packetSize=100))
    assert outcome.status == "pass", outcome.message
    assert outcome.message is not None
    assert outcome.message.startswith("3/3 replies from 127.0.0.1 (0% loss), rtt min/avg/max ")
    phases = outcome.phases
    assert phases is not None
    assert (phases["packets_sent"], phases["packets_received"]) == (3, 3)
    assert phases["packet_loss_percent"] == 0
    assert 0 <= phases["rtt_min_ms"] <= phases["rtt_avg_ms"] <= phases["rtt_max_ms"]
    row = result_row("c@a", "ping", outcome)
    assert row.phases is not None
    assert (row.phases.packets_sent, row.phases.packets_received) == (3, 3)
    assert row.phases.rtt_avg_ms == phases["rtt_avg_ms"]


@needs_icmp
@pytest.mark.skipif(not _has_ipv6_loopback(), reason="this machine has no IPv6 loopback (::1)")
def test_pinging_the_ipv6_loopback_passes() -> None:
    outcome = _run(icmp("::1"))
    assert outcome.status == "pass", outcome.message
    assert outcome.phases is not None and outcome.phases["packets_received"] == 3


@needs_icmp
def test_ip_version_picks_the_family_of_a_name() -> None:
    outcome = _run(icmp("localhost", ipVersion="V4", packetCount=1))
    assert outcome.status == "pass", outcome.message
    assert "from 127.0.0.1 " in (outcome.message or "")


@needs_icmp
def test_a_host_that_never_answers_fails_with_full_loss_at_the_timeout() -> None:
    # 198.51.100.0/24 (TEST-NET-2) is documentation space: nothing answers there.
    outcome = _run(icmp("198.51.100.1", packetCount=2, timeout_ms=300))
    assert outcome.status == "fail"
    assert outcome.message == "no reply: 0/2 replies from 198.51.100.1 (100% loss)"
    assert outcome.phases is not None
    assert (outcome.phases["packets_sent"], outcome.phases["packet_loss_percent"]) == (2, 100)
    assert "rtt_avg_ms" not in outcome.phases
    assert 300 <= outcome.duration_ms < 2000


def _spec(**fields: Any) -> PingSpec:
    return PingSpec.parse(icmp("192.0.2.9", **fields))


def test_loss_over_the_threshold_fails_and_loss_within_it_passes() -> None:
    rtts = [0.2, 0.4, 0.3]
    lossy = ping_verdict(_spec(packetLossThreshold=20), "192.0.2.9", 4, rtts, 5.0)
    assert lossy.status == "fail"
    assert lossy.message == (
        "3/4 replies from 192.0.2.9 (25% loss), rtt min/avg/max 0.200/0.300/0.400 ms: "
        "loss over packetLossThreshold 20%"
    )
    assert ping_verdict(_spec(packetLossThreshold=25), "192.0.2.9", 4, rtts, 5.0).status == "pass"
    # Without a threshold, a partial loss passes: only silence fails.
    assert ping_verdict(_spec(), "192.0.2.9", 4, rtts, 5.0).status == "pass"


def test_an_average_round_trip_over_threshold_millis_fails() -> None:
    slow = ping_verdict(
        _spec(thresholdMillis=50, packetCount=2), "192.0.2.9", 2, [40.0, 70.0], 120.0
    )
    assert slow.status == "fail"
    assert slow.message == "average rtt 55.000ms is over thresholdMillis 50"
    assert ping_verdict(
        _spec(thresholdMillis=60, packetCount=2), "192.0.2.9", 2, [40.0, 70.0], 1
    ).status == ("pass")


def test_an_address_of_the_other_family_than_ip_version_fails() -> None:
    outcome = _run(icmp("127.0.0.1", ipVersion="V6", packetCount=1))
    assert (outcome.status, outcome.message) == (
        "fail",
        "127.0.0.1 is not an IPv6 address (ipVersion)",
    )


def test_an_unresolvable_host_fails_naming_it() -> None:
    outcome = _run(icmp("no-such-host.invalid", packetCount=1))
    assert outcome.status == "fail"
    assert outcome.message is not None
    assert outcome.message.startswith("cannot resolve no-such-host.invalid")


def test_the_echo_request_carries_a_valid_checksum() -> None:
    message = echo_request(socket.AF_INET, 0x1234, 7, b"canary")
    assert message[0] == 8 and checksum(message) == 0
    assert message[4:8] == bytes([0x12, 0x34, 0, 7])


def test_the_error_names_both_missing_permissions() -> None:
    message = unavailable_message([1000, 27], "1 0", 1000)
    assert "groups 27, 1000 are outside net.ipv4.ping_group_range = 1 0" in message
    assert "raw ICMP sockets need root or CAP_NET_RAW (running as uid 1000)" in message


def _ping_as_nobody(
    check: dict[str, Any], setup: str = "", launcher: tuple[str, ...] = ()
) -> dict[str, Any]:
    """Run an icmp check in a child process that drops to `nobody` first; its status,
    message, phases and effective uid.

    The child runs `setup` (as root), imports everything and opens its HTTP clients as root,
    then drops: the interpreter's own files may not be readable by nobody on this machine.
    `launcher` goes before the interpreter (`unshare --net`).
    """
    script = setup + (
        "import asyncio, json, os, sys, concurrent.futures.thread\n"
        "from agent.checks import ClientPool, run_check\n"
        "from datetime import UTC, datetime\n"
        "async def main():\n"
        "    async with ClientPool(size=1, trust_env=False) as pool:\n"
        "        os.setgroups([]); os.setgid(65534); os.setuid(65534)\n"
        "        o = await run_check(json.loads(sys.argv[1]), pool, lambda: datetime.now(UTC))\n"
        "    print(json.dumps({'status': o.status, 'message': o.message, 'phases': o.phases,\n"
        "                      'uid': os.geteuid()}))\n"
        "asyncio.run(main())\n"
    )
    spec = {"name": "p", "type": "icmp", "timeout_ms": 2000, **check}
    result = subprocess.run(
        [*launcher, sys.executable, "-c", script, json.dumps(spec)],
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    outcome: dict[str, Any] = json.loads(result.stdout)
    return outcome


@pytest.mark.skipif(os.geteuid() != 0, reason="dropping to another user needs root")
def test_a_process_without_either_permission_gets_an_error_naming_what_is_missing() -> None:
    with open("/proc/sys/net/ipv4/ping_group_range") as handle:
        low, high = (int(x) for x in handle.read().split())
    if low <= 65534 <= high:
        pytest.skip("nobody's group may send unprivileged pings here")
    outcome = _ping_as_nobody({"endpoint": "127.0.0.1", "packetCount": 1})
    status, message = outcome["status"], outcome["message"]
    assert status == "error"
    assert message.startswith("IcmpUnavailable: cannot open an ICMP socket: ")
    assert "net.ipv4.ping_group_range" in message
    assert "raw ICMP sockets need root or CAP_NET_RAW (running as uid 65534)" in message


@needs_icmp
def test_the_agent_exposes_synthetic_monitorings_ping_series() -> None:
    series = CheckSeries()
    series.record("web@eu-1", "ping", "icmp", _run(icmp("127.0.0.1")))
    text = series.render()
    labels = '{canary="web@eu-1",check="ping"}'
    assert f"probe_icmp_packets_sent_count{labels} 3\n" in text
    assert f"probe_icmp_packets_received_count{labels} 3\n" in text
    assert f"probe_success{labels} 1\n" in text
    assert "# TYPE probe_icmp_duration_rtt_min_seconds gauge\n" in text
    assert '{canary="web@eu-1",check="ping",phase="rtt"}' in text


@needs_icmp
def test_concurrent_pings_each_get_their_own_replies() -> None:
    async def main() -> list[CheckOutcome]:
        async with ClientPool(size=1, trust_env=False) as pool:
            runs = [run_check(icmp("127.0.0.1"), pool, lambda: NOW) for _ in range(50)]
            runs += [run_check(icmp("198.51.100.1", timeout_ms=300), pool, lambda: NOW)]
            return list(await asyncio.gather(*runs))

    *answered, silent = asyncio.run(main())
    assert {(o.status, (o.phases or {}).get("packets_received")) for o in answered} == {("pass", 3)}
    # Replies to the other runs' requests never count for a host that does not answer.
    assert (silent.status, (silent.phases or {}).get("packets_received")) == ("fail", 0)


def test_a_cel_test_sees_packet_counts_loss_and_round_trips() -> None:
    check = icmp(
        "192.0.2.9",
        test={"expr": "packetLoss < 30.0 && rtt.max < Duration('50ms') && packetsReceived >= 3"},
        display={"expr": "string(packetsReceived) + ' of ' + string(packetsSent)"},
    )
    passed = ping_verdict(_spec(), "192.0.2.9", 4, [1.0, 2.0, 3.0], 9.0, check)
    assert (passed.status, passed.message) == ("pass", "3 of 4")
    slow = ping_verdict(_spec(), "192.0.2.9", 4, [1.0, 2.0, 70.0], 90.0, check)
    assert slow.status == "fail"
    assert slow.message is not None and slow.message.startswith("test ")
    assert slow.message.endswith(" is false (3 of 4)")
    broken_test = icmp("x", test={"expr": "rtt.p99 > 1"})
    broken = ping_verdict(_spec(), "192.0.2.9", 4, [1.0, 2.0, 3.0], 2.0, broken_test)
    assert (broken.status, broken.message) == (
        "error",
        "CEL expression failed: no such member in mapping: 'p99'",
    )
    # A run that failed on its own stays a failure: its reason first, the expression's after.
    short = ping_verdict(_spec(), "192.0.2.9", 1, [1.0], 2.0, broken_test)
    assert short.status == "fail" and short.message is not None
    assert short.message.startswith("only 1 of packetCount 3 requests were sent")
    assert short.message.endswith("; CEL expression failed: no such member in mapping: 'p99'")


@needs_icmp
def test_a_request_that_cannot_leave_fails_with_the_reason() -> None:
    # The kernel refuses to send to the broadcast address from a socket not allowed to.
    outcome = _run(icmp("255.255.255.255", packetCount=1))
    assert outcome.status == "fail"
    assert (outcome.message or "").startswith("cannot ping 255.255.255.255: ")


def test_a_canary_checker_icmp_canary_loads_and_pings_a_urls_host() -> None:
    text = (
        "apiVersion: canaries.flanksource.com/v1\nkind: Canary\nmetadata:\n  name: ping\n"
        "spec:\n  interval: 30\n  icmp:\n    - endpoint: http://127.0.0.1/\n"
        "      thresholdMillis: 500\n      packetLossThreshold: 5\n      packetCount: 2\n"
    )
    result = load_config([SourceFile("ping.yaml", "sha-ping", text.encode)])
    assert result.ok, [d.format() for d in result.diagnostics]
    config = agent_configs(compile_config(result.config).resources.values(), {})["local"]
    (check,) = orjson.loads(config.body)["canaries"][0]["checks"]
    assert (check["type"], check["name"], check["packetCount"]) == ("icmp", "http://127.0.0.1/", 2)
    if _can_ping():
        outcome = _run({**check, "interval": "10ms"})
        assert outcome.status == "pass", outcome.message
        assert "from 127.0.0.1 " in (outcome.message or "")


def test_an_endpoint_that_is_not_a_host_is_refused_at_its_line() -> None:
    text = (
        "apiVersion: canary-reconciler/v1\nkind: Canary\nmetadata:\n  name: ping\n"
        "spec:\n  icmp:\n    - endpoint: 'db:5432'\n"
    )
    result = load_config([SourceFile("ping.yaml", "sha-bad", text.encode)])
    errors = [d.format() for d in result.diagnostics if d.severity == "error"]
    assert errors == [
        "ping.yaml:7:7: Canary/default/ping: spec.icmp[0].endpoint: 'db:5432' is not a host "
        "name or IP address"
    ]


def test_a_display_template_looks_up_the_same_names() -> None:
    check = icmp("x", display={"template": "{{.packetsReceived}}/{{.packetsSent}} back"})
    verdict = ping_verdict(_spec(), "192.0.2.9", 4, [1.0, 2.0], 5.0, check)
    assert (verdict.status, verdict.message) == ("pass", "2/4 back")


@needs_icmp
def test_requests_that_do_not_fit_in_the_timeout_fail_the_check() -> None:
    outcome = _run(icmp("127.0.0.1", packetCount=3, interval="200ms", timeout_ms=300))
    assert outcome.status == "fail"
    assert (outcome.message or "").startswith(
        "only 2 of packetCount 3 requests were sent before the timeout (0.3s); lower "
        "packetCount or interval (0.2s)"
    )


def test_requests_that_cannot_fit_in_an_explicit_timeout_are_refused_at_load() -> None:
    text = (
        "apiVersion: canary-reconciler/v1\nkind: Canary\nmetadata:\n  name: ping\n"
        "spec:\n  icmp:\n    - endpoint: 127.0.0.1\n      packetCount: 5\n"
        "      interval: 500ms\n      timeout: 1s\n"
    )
    result = load_config([SourceFile("ping.yaml", "sha-fit", text.encode)])
    errors = [d.format() for d in result.diagnostics if d.severity == "error"]
    assert len(errors) == 1, errors
    assert errors[0].endswith(
        "spec.icmp[0].interval: 5 requests 500ms apart take 2s, not less than timeout 1s"
    )


# Brings `lo` up in a new network namespace (SIOCGIFFLAGS / SIOCSIFFLAGS, IFF_UP), then lets
# every group send unprivileged pings there: the namespace's own sysctl, not the host's.
_OPEN_PINGS_HERE = (
    "import fcntl, socket, struct\n"
    "probe = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)\n"
    "flags = struct.unpack('16sH', fcntl.ioctl(probe, 0x8913, struct.pack('16sH', b'lo', 0)))[1]\n"
    "fcntl.ioctl(probe, 0x8914, struct.pack('16sH', b'lo', flags | 1))\n"
    "with open('/proc/sys/net/ipv4/ping_group_range', 'w') as handle:\n"
    "    handle.write('0 2147483647')\n"
)


def _network_namespaces() -> bool:
    """Whether this process may make a network namespace (root, and CAP_SYS_ADMIN: not in a
    container that withholds it)."""
    if os.geteuid() != 0 or not shutil.which("unshare"):
        return False
    tried = subprocess.run(["unshare", "--net", "true"], capture_output=True, timeout=30)
    return tried.returncode == 0


@pytest.mark.skipif(
    not _network_namespaces(),
    reason="needs root, unshare (util-linux) and the right to make a network namespace",
)
@pytest.mark.parametrize("address", ["127.0.0.1", "::1"])
def test_an_agent_without_root_pings_where_the_kernel_allows_unprivileged_pings(
    address: str,
) -> None:
    """The datagram path: no raw socket, no CAP_NET_RAW, only net.ipv4.ping_group_range."""
    outcome = _ping_as_nobody(
        {"endpoint": address, "packetCount": 2, "interval": "10ms"},
        setup=_OPEN_PINGS_HERE,
        launcher=("unshare", "--net"),
    )
    status, message, phases, uid = (outcome[key] for key in ("status", "message", "phases", "uid"))
    assert uid == 65534
    assert status == "pass"
    assert message.startswith(f"2/2 replies from {address} (0% loss)")
    assert phases["packets_sent"] == 2 and phases["packets_received"] == 2
    assert phases["packet_loss_percent"] == 0
