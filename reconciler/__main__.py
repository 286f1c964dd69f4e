"""`python -m reconciler` runs the `reconcile` command line."""

from reconciler.cli import run

run()
