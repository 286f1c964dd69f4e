"""Renderers that turn a plan or diagnostics into text for people and CI. Pure."""
