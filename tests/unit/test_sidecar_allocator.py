"""The sidecar asks glibc for a single malloc arena, so its journal threads keep no memory of their own."""

from __future__ import annotations

import platform
import subprocess
import sys

import pytest


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="mallopt is glibc's")
def test_glibc_agrees_to_one_arena() -> None:
    script = "from candor_sidecar.allocator import single_arena\nprint(single_arena())"
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60, check=False)
    assert result.stdout.strip() == "True", result.stderr
