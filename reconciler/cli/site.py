"""`reconcile site build`: render the static status site from a state file."""

from __future__ import annotations

import argparse
import os
from datetime import timedelta
from pathlib import Path

from reconciler.cli import options
from reconciler.cli.console import Console
from reconciler.cli.options import EXIT_ERROR, EXIT_OK, Subcommands
from reconciler.server.settings import SECRETS, SITE_RENDER_WORKERS, ServeSettings

ADMIN_TOKEN_ENV = SECRETS["admin_token"]

NAME = "site"
# A full build of a large fleet through a busy server; the server keeps building if we give up.
SERVER_TIMEOUT = 300.0
# As `reconcile serve --agent-silent-after`, so both show the same agents as silent.
DEFAULT_SILENT_AFTER = ServeSettings.agent_silent_after

DESCRIPTION = """\
Render the status site (fleet overview, a report per region, a page per canary, SLA
reports, incidents, canary deployments and a public status page; windows 24 h, 7 d, 30 d,
90 d and 365 d) as static HTML into DIR: it works opened from file:// and from any static
host. Rollup tables are kept in the state file, so a rebuild only redoes what changed, and
pages are replaced atomically.
"""

LOCKED = f"""\
{{error}}
`reconcile site build` keeps its rollup tables in the state file, so it needs the file for
writing. While `reconcile serve` holds it, the server is the one to build the site: run this
again with {ADMIN_TOKEN_ENV} set (the server's address is read from <state>.serve.json)
and the server builds into --out, or stop the server first."""


def register(commands: Subcommands) -> None:
    """Add `site build` to the CLI."""
    site = commands.add_parser(
        NAME,
        help="build the static status site",
        description=DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    actions = options.subcommands(site, "site_command", required=True)
    build = actions.add_parser(
        "build",
        help="render the site into a directory",
        description=DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    options.add_state(build)
    build.add_argument("--out", type=Path, required=True, metavar="DIR", help="output directory")
    options.add_lock_timeout(build)
    build.add_argument(
        "--workers",
        type=options.count,
        default=SITE_RENDER_WORKERS,
        metavar="N",
        help="processes rendering pages, this one and N-1 forked (default: up to 2)",
    )
    build.add_argument(
        "--agent-silent-after",
        type=options.seconds,
        default=DEFAULT_SILENT_AFTER,
        metavar="SECONDS",
        help="show enabled agents not heard from for longer as silent, as `reconcile serve "
        f"--agent-silent-after` does (default {DEFAULT_SILENT_AFTER:g}; 0: show none)",
    )
    options.add_quiet(build, help="print nothing on success")


def _build_through_server(args: argparse.Namespace, url: str, console: Console) -> int:
    """The running server holds the state: ask it to build into the same directory."""
    from reconciler.cli.server_client import post_as_admin

    report = post_as_admin(
        url,
        "/api/site/build",
        {"out": str(args.out.absolute())},
        timeout=SERVER_TIMEOUT,
        console=console,
        state=args.state,
        to="build the site through it",
    )
    if report is None:
        return EXIT_ERROR
    if not console.quiet:
        console.say(
            f"Built {args.out} through the server at {url}: {report['pages']} pages, "
            f"{report['written']} written."
        )
    return EXIT_OK


def run(args: argparse.Namespace, console: Console) -> int:
    """Build the site, or have the server that holds the state build it."""
    from reconciler.cli.server_client import server_url
    from reconciler.sitebuild import SiteError, build_site
    from reconciler.store.db import StateError, StateLocked, open_state

    if not args.state.exists():
        console.error(f"no state file at {args.state}; run `reconcile apply` first")
        return EXIT_ERROR
    # Without write access the rollups live in memory for this run: a full build every time.
    temporary = not os.access(args.state, os.W_OK)
    try:
        connection = open_state(args.state, read_only=temporary, lock_timeout=args.lock_timeout)
    except StateLocked as error:
        url = server_url(args.state)
        if url is not None:
            return _build_through_server(args, url, console)
        console.error(LOCKED.format(error=str(error)))
        return EXIT_ERROR
    except StateError as error:
        console.error(str(error))
        return EXIT_ERROR
    assert connection is not None
    try:
        with connection:
            report = build_site(
                connection,
                args.out,
                workers=args.workers,
                temporary=temporary,
                agent_silent_after=timedelta(seconds=args.agent_silent_after)
                if args.agent_silent_after > 0
                else None,
            )
    except (SiteError, StateError) as error:
        console.error(str(error))
        return EXIT_ERROR
    except OSError as error:
        console.error(f"cannot write the site to {args.out}: {options.os_problem(error)}")
        return EXIT_ERROR
    if not console.quiet:
        if temporary:
            console.note(f"note: {args.state} is read-only here; rollups were computed in memory")
        published = report.published
        timings = ", ".join(f"{name} {seconds:.2f}s" for name, seconds in report.timings.items())
        console.say(
            f"Built {args.out}: {published.pages} pages, {published.rendered} rendered, "
            f"{published.written} written, {published.removed} removed ({timings})."
        )
    return EXIT_OK
