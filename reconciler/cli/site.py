"""`reconcile site build`: render the static status site from a state file."""

from __future__ import annotations

import argparse
import os
from pathlib import Path
from typing import Any

from reconciler.cli.server_client import ServerUnreachable, admin_post, server_url
from reconciler.server.address_file import server_file
from reconciler.sitebuild import SiteError, build_site
from reconciler.store.db import StateError, StateLocked, open_state

DESCRIPTION = """\
Render the status site (fleet overview, a report per region, a page per canary, incidents,
canary deployments and a public status page; windows 24 h / 7 d / 30 d) as static HTML into
DIR: it works opened from file:// and from any static host. Rollup tables are kept in the
state file, so a rebuild only redoes what changed, and pages are replaced atomically.
"""

LOCKED = """\
{error}
`reconcile site build` keeps its rollup tables in the state file, so it needs the file for
writing. While `reconcile serve` holds it, the server is the one to build the site: run this
again with RECONCILER_ADMIN_TOKEN set (the server's address is read from <state>.serve.json)
and the server builds into --out, or stop the server first."""


def add_site_command(commands: Any) -> None:
    """Register `site build` on the CLI's subcommands."""
    site = commands.add_parser(
        "site",
        help="build the static status site",
        description=DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    actions = site.add_subparsers(dest="site_command", metavar="ACTION", required=True)
    build = actions.add_parser(
        "build",
        help="render the site into a directory",
        description=DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    build.add_argument(
        "--state",
        type=Path,
        default=Path(os.environ.get("RECONCILER_STATE", "reconciler.duckdb")),
        help="DuckDB state file (default: $RECONCILER_STATE or reconciler.duckdb)",
    )
    build.add_argument("--out", type=Path, required=True, metavar="DIR", help="output directory")
    build.add_argument(
        "--lock-timeout",
        type=float,
        default=10.0,
        metavar="SECONDS",
        help="wait this long for another process holding the state file (default: 10)",
    )
    build.add_argument(
        "--workers",
        type=int,
        default=min(2, os.cpu_count() or 1),
        help="processes rendering pages (default: up to 2)",
    )
    build.add_argument("-q", "--quiet", action="store_true", help="print nothing on success")


def _build_through_server(args: argparse.Namespace, out: Any, err: Any) -> int:
    """The running server holds the state: ask it to build into the same directory."""
    url = server_url(args.state)
    admin = os.environ.get("RECONCILER_ADMIN_TOKEN")
    if not admin:
        print(
            f"Error: {args.state} is held by the server at {url}; set RECONCILER_ADMIN_TOKEN "
            "(its admin token) to build the site through it",
            file=err,
        )
        return 1
    assert url is not None  # only called when the server file exists
    try:
        body = {"out": str(args.out.absolute())}
        response = admin_post(url, "/api/site/build", admin, timeout=300, body=body)
    except ServerUnreachable as error:
        print(f"Error: {error}", file=err)
        return 1
    if response.status_code != 200:
        print(f"Error: the server refused ({response.status_code}): {response.text}", file=err)
        return 1
    if not args.quiet:
        report = response.json()
        print(
            f"Built {args.out} through the server at {url}: {report['pages']} pages, "
            f"{report['written']} written.",
            file=out,
        )
    return 0


def run_site(args: argparse.Namespace, out: Any, err: Any) -> int:
    """`reconcile site build --state FILE --out DIR`."""
    if not args.state.exists():
        print(f"Error: no state file at {args.state}; run `reconcile apply` first", file=err)
        return 1
    # Without write access the rollups live in memory for this run: a full build every time.
    temporary = not os.access(args.state, os.W_OK)
    try:
        connection = open_state(args.state, read_only=temporary, lock_timeout=args.lock_timeout)
    except StateLocked as error:
        if server_file(args.state).exists():
            return _build_through_server(args, out, err)
        print("Error: " + LOCKED.format(error=str(error)), file=err)
        return 1
    except StateError as error:
        print(f"Error: {error}", file=err)
        return 1
    assert connection is not None
    try:
        with connection:
            report = build_site(connection, args.out, workers=args.workers, temporary=temporary)
    except (SiteError, StateError, OSError) as error:
        print(f"Error: {error}", file=err)
        return 1
    if not args.quiet:
        if temporary:
            print(
                f"note: {args.state} is read-only here; rollups were computed in memory", file=err
            )
        published = report.published
        timings = ", ".join(f"{name} {seconds:.2f}s" for name, seconds in report.timings.items())
        print(
            f"Built {args.out}: {published.pages} pages, {published.rendered} rendered, "
            f"{published.written} written, {published.removed} removed ({timings}).",
            file=out,
        )
    return 0
