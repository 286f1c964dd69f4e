"""Background controllers of the server: incidents, canary deployments, site rebuilds."""
