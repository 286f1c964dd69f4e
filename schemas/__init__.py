"""Typed models of the config repository's YAML kinds and of the agent wire protocol."""
