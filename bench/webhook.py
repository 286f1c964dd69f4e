"""How long from a signed webhook until an agent's pull returns the new config."""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests.conftest import ConfigRepo, agent_doc, canary_doc, region_doc  # noqa: E402
from tests.server import running_server  # noqa: E402

TARGET_SECONDS = 2.0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--commits", type=int, default=10)
    parser.add_argument("--debounce", default="0.3", help="serve --debounce (default 0.3)")
    args = parser.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="reconcile-webhook-"))
    repo = ConfigRepo(tmp / "repo")
    repo.write("regions.yaml", region_doc("eu"))
    repo.write("agents.yaml", agent_doc("eu-1", "eu"))
    repo.write("canary.yaml", canary_doc("web"))
    repo.commit()
    extra = ("--debounce", args.debounce)
    with running_server(repo.path, tmp / "state.duckdb", extra=extra) as server:
        server.wait_ready()
        headers = {"Authorization": f"Bearer {server.token('eu-1')}"}
        samples = []
        for index in range(args.commits):
            etag = server.client.get("/api/agent/targets", headers=headers).headers["etag"]
            repo.write("canary.yaml", canary_doc("web", url=f"https://example.com/{index}"))
            repo.commit(f"commit {index}")
            started = time.perf_counter()
            server.webhook()
            unchanged = {**headers, "If-None-Match": etag}
            while server.client.get("/api/agent/targets", headers=unchanged).status_code == 304:
                time.sleep(0.005)
            samples.append(time.perf_counter() - started)
    median, worst = statistics.median(samples), max(samples)
    print(
        f"webhook -> new config served: median {median * 1000:.0f} ms, "
        f"max {worst * 1000:.0f} ms over {len(samples)} commits (--debounce {args.debounce})"
    )
    print(f"{'PASS' if worst <= TARGET_SECONDS else 'MISS'}: target {TARGET_SECONDS:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
