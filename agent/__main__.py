"""`python -m agent` runs the `agent` command line."""

from agent.cli import run

run()
