"""canary-reconciler: synthetic monitoring and progressive delivery, managed as code."""

__version__ = "0.1.0"
