"""Candor operator: reconciles HealthPolicy into HAProxy ingress annotations and sidecar config."""
