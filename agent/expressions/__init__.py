"""Expressions in check specs: CEL as canary-checker evaluates it, and Go template lookups.

Pure (no I/O), so the reconciler's loader compiles them too without importing the checks.
"""
