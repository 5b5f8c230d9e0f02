"""Candor sidecar: introspective /health, HAProxy agent-check endpoint, /metrics from the journals."""
