"""Without HAProxy or Prometheus the demo says exactly what is missing and how to get it."""

from __future__ import annotations

from pathlib import Path

import pytest

from candor_demo.preflight import MissingTools, Tool, ensure_tools


def test_missing_tools_are_named_with_the_install_command(tmp_path: Path) -> None:
    # Names on no PATH, binaries at no path: both missing.
    tools = (Tool("haproxy-candor-absent", str(tmp_path / "no-haproxy")),
             Tool("prometheus-candor-absent", str(tmp_path / "no")))
    with pytest.raises(MissingTools) as caught:
        ensure_tools(install=False, tools=tools)
    message = str(caught.value)
    assert str(tmp_path / "no-haproxy") in message
    assert "needs the real haproxy-candor-absent and prometheus-candor-absent" in message
    assert "sudo apt-get install -y haproxy-candor-absent prometheus-candor-absent" in message


def test_a_binary_the_user_names_must_exist(tmp_path: Path) -> None:
    with pytest.raises(MissingTools, match=r"--prometheus .*no executable there"):
        ensure_tools({"prometheus": str(tmp_path / "prometheus")}, install=False)


def test_present_tools_are_returned_by_name(tmp_path: Path) -> None:
    binary = tmp_path / "fake-tool"
    binary.write_text("#!/bin/sh\n")
    binary.chmod(0o755)
    assert ensure_tools(install=False, tools=(Tool("fake-tool", str(binary)),)) == {"fake-tool": str(binary)}
