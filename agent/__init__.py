"""The probe agent: pulls its checks from the control plane, runs them, ships results."""
