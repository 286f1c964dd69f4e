"""`reconcile serve`: the long-running control plane, its controllers and its HTTP API."""
