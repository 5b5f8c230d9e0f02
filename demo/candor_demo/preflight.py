"""Before the demo starts anything: are the real HAProxy and Prometheus there (and can we get them)?"""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

from candor_demo.haproxy_process import HAPROXY_BINARY
from candor_demo.prometheus_process import PROMETHEUS_BINARY


@dataclass(frozen=True)
class Tool:
    name: str  # the Debian package and the command
    binary: str  # where Debian installs it

    def found(self) -> str | None:
        if os.access(self.binary, os.X_OK):
            return self.binary
        return shutil.which(self.name)


TOOLS = (Tool("haproxy", HAPROXY_BINARY), Tool("prometheus", PROMETHEUS_BINARY))


class MissingTools(RuntimeError):
    pass


def _can_install() -> list[str] | None:
    """The command prefix that may run apt-get here (root, or password-less sudo), else None."""
    if shutil.which("apt-get") is None:
        return None
    if os.geteuid() == 0:
        return []
    if shutil.which("sudo"):
        probe = subprocess.run(["sudo", "-n", "true"], capture_output=True, check=False)
        if probe.returncode == 0:
            return ["sudo", "-n"]
    return None


def _explicit(name: str, path: str) -> str:
    if not os.access(path, os.X_OK):
        raise MissingTools(f"candor demo: --{name} {path}: no executable there. Leave the option out to use "
                           f"Debian's {name} (sudo apt-get install -y {name}).")
    return path


def ensure_tools(explicit: Mapping[str, str | None] | None = None, install: bool = True,
                 say: Callable[[str], object] = print, tools: Sequence[Tool] = TOOLS) -> dict[str, str]:
    """name -> path of each tool. A path the user gave must exist; otherwise Debian's binary or one on PATH,
    installed with apt-get when missing and allowed (root or password-less sudo); else MissingTools says how."""
    given = {name: _explicit(name, path) for name, path in (explicit or {}).items() if path}
    missing = [tool for tool in tools if tool.name not in given and tool.found() is None]
    if missing and install:
        prefix = _can_install()
        if prefix is not None:
            names = [tool.name for tool in missing]
            say(f"candor demo: installing {' '.join(names)} from Debian (apt-get)")
            env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
            subprocess.run([*prefix, "apt-get", "update", "-qq"], check=False, env=env)
            subprocess.run([*prefix, "apt-get", "install", "-y", "-qq", *names], check=False, env=env,
                           stdout=subprocess.DEVNULL)
            missing = [tool for tool in missing if tool.found() is None]
    if missing:
        packages = " ".join(tool.name for tool in missing)
        one = len(missing) == 1
        raise MissingTools(
            f"candor demo needs the real {' and '.join(t.name for t in missing)}, and "
            f"{'it is' if one else 'they are'} not installed "
            f"(looked for {', '.join(t.binary for t in missing)} and on PATH).\n"
            f"Install {'it' if one else 'them'} with:  sudo apt-get update && sudo apt-get install -y {packages}\n"
            f"(Debian 12 ships HAProxy 2.6 with the Prometheus exporter built in, and Prometheus 2.42.)")
    return {tool.name: given.get(tool.name) or tool.found() or tool.binary for tool in tools}
