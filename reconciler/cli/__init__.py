"""The command line: one module per `reconcile` command, `main.py` assembles them."""
