"""Candor's version: the one place it is written (pyproject.toml reads it from here).

A constant rather than importlib.metadata, which would load the email package into every sidecar.
"""

VERSION = "0.1.0"
