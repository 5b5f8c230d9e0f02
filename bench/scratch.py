"""Scratch directories of the benchmarks: removed after a run, kept for their logs when the run crashed."""

from __future__ import annotations

import shutil
import sys
import tempfile
from pathlib import Path


def scratch_dir(prefix: str) -> Path:
    """A new directory under the system's temporary directory, for one run's files and logs."""
    return Path(tempfile.mkdtemp(prefix=prefix))


def remove_scratch(path: Path) -> None:
    """Removes `path` where a run ends, unless an exception is on its way out through the `finally` this
    is called from (then its logs are what tells why: it stays and its path is printed)."""
    if sys.exc_info()[0] is not None:
        print(f"kept for its logs: {path}", file=sys.stderr)
        return
    shutil.rmtree(path, ignore_errors=True)
