"""`python -m reconciler` runs the `reconcile` command line."""

from reconciler.cli.main import run

run()
