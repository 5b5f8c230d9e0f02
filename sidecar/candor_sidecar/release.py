"""Candor's version at run time, as the installed `candor` distribution records it.

The version is declared once, as the static `version` of the repository's root pyproject.toml, where the
`candor` distribution is; tests/unit/test_release_version.py names the files that must write it out.

It is read from the name of the distribution's `.dist-info` folder (`candor-<version>.dist-info`, the name
every installer gives it, editable installs included), found on sys.path as importlib.metadata finds it:
importlib.metadata would load the email package and zipfile into every sidecar (about 2 MB resident).
"""

from __future__ import annotations

import os
import sys

DISTRIBUTION = "candor"


class NotInstalledError(RuntimeError):
    """No installed `candor` distribution on sys.path, so no version to read."""


def installed_version(distribution: str = DISTRIBUTION, path: list[str] | None = None) -> str:
    """The version of `distribution` in the first entry of `path` (sys.path) that holds its .dist-info."""
    prefix, suffix = f"{distribution}-", ".dist-info"
    for entry in sys.path if path is None else path:
        try:
            names = os.listdir(entry or ".")
        except OSError:  # a zip, a missing folder: no installed distribution there
            continue
        found = sorted(name for name in names if name.startswith(prefix) and name.endswith(suffix))
        if found:
            return found[0].removeprefix(prefix).removesuffix(suffix)
    raise NotInstalledError(f"the {distribution!r} distribution is not installed (pip install . or make venv): "
                            "its version comes from the installed metadata")


VERSION = installed_version()
