"""The DuckDB state file: the only package that imports duckdb."""
