"""The HTTP API of `reconcile serve`: thin FastAPI routes over the control plane."""
