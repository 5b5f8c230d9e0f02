"""Running a test's process as pid 1 of a fresh PID namespace, as every app container of a pod is.

Tests of PID reuse start the same program twice this way, so both get the same pid, the way a container
restarted in its pod does.
"""

from __future__ import annotations

import shutil
import subprocess

import pytest

# The command prefix: a new PID namespace, forked into (so the program is its pid 1), with its own /proc.
PREFIX = ["unshare", "--pid", "--fork", "--mount-proc"]


def _unshare_works() -> bool:
    if shutil.which("unshare") is None:
        return False
    try:
        result = subprocess.run([*PREFIX, "true"], capture_output=True, timeout=10, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return False
    return result.returncode == 0


# Skips where PID namespaces cannot be made (neither root nor unprivileged user namespaces).
needs_pid_namespace = pytest.mark.skipif(not _unshare_works(),
                                         reason="needs `unshare --pid` (root or user namespaces)")
