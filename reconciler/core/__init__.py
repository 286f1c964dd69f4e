"""The pure core: load, compile, diff and plan. No DuckDB, git, HTTP or clock in here."""
