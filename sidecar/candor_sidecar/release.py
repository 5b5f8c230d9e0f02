"""Candor's version: the one place Python reads it (pyproject.toml too); tests/unit/test_release_version.py
names the files that must write it out.

A constant rather than importlib.metadata, which would load the email package into every sidecar.
"""

VERSION = "0.1.0"
