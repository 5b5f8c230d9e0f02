"""`candor sidecar` (also `python -m candor_sidecar`), and `candor sidecar drain`, its container's preStop hook.

The sidecar runs in every pod, so its start costs as little memory as it can: flags are read with the
stdlib's argparse (the `candor` command hands `sidecar` straight to `main` here, before importing
click), and OpenSSL is never loaded: its entry points call candor_sidecar.no_openssl before importing
this module.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from typing import NoReturn

from candor_sidecar.config import SidecarConfig, load_config, parse_config
from candor_sidecar.field_error import FieldError
from candor_tracer.pod_contract import CONTROL_SOCKET_ENV, TERMINATION_MESSAGE_PATH

CONFIG_ERROR_EXIT = 2
DESCRIPTION = ("Run the pod sidecar: /health, HAProxy agent-check, /metrics from the journals, drain and flush on "
               "termination. `drain` (a subcommand) makes the running sidecar answer drain.")


def build_config(config_path: str | None, state_dir: str | None, http_port: int | None,
                 agent_port: int | None, grace_period: float | None = None,
                 control_socket: str | None = None, app_ports: Sequence[int] | None = None,
                 termination_message_path: str | None = None) -> SidecarConfig:
    config = load_config(config_path) if config_path else parse_config({})
    if state_dir is not None:
        state_dir = os.path.abspath(state_dir)
    if control_socket is not None and control_socket != "":
        control_socket = os.path.abspath(control_socket)
    return config.with_overrides(state_dir=state_dir, http_port=http_port, agent_port=agent_port,
                                 grace_period=grace_period, control_socket=control_socket or None,
                                 app_ports=tuple(app_ports) if app_ports else None,
                                 termination_message_path=termination_message_path)


def parser(prog: str) -> argparse.ArgumentParser:
    flags = argparse.ArgumentParser(prog=prog, description=DESCRIPTION)
    flags.add_argument("--config", dest="config_path", metavar="PATH",
                       help="Sidecar YAML config (the schema the operator writes). Defaults apply without one.")
    flags.add_argument("--state-dir", help="Directory of the tracer's journals (overrides stateDir).")
    flags.add_argument("--http-port", type=int, help="Port of /health, /livez, /readyz, /metrics (default 9898).")
    flags.add_argument("--agent-port", type=int, help="Port of the HAProxy agent-check (default 9999).")
    flags.add_argument("--termination-grace-period", dest="grace_period", type=float, metavar="SECONDS",
                       help="The pod's terminationGracePeriodSeconds (default 30): bounds the drain wait and its "
                            "self-lift.")
    flags.add_argument("--control-socket", default=os.environ.get(CONTROL_SOCKET_ENV), metavar="PATH",
                       help=f"Unix socket for `candor sidecar drain`, in a directory only the sidecar container "
                            f"mounts (${CONTROL_SOCKET_ENV}; default none: a drain starts with SIGTERM only).")
    flags.add_argument("--app-port", dest="app_ports", type=int, action="append", metavar="PORT",
                       help="A port the pod's Services send traffic to (repeatable): /health/app fails, and the "
                            "pod is not Ready, until each accepts a TCP connection on 127.0.0.1 (or $POD_IP).")
    flags.add_argument("--termination-message-path", metavar="PATH",
                       help=f"The container's termination message file, where each drain's summary is left for "
                            f"the operator's Drained Event (default {TERMINATION_MESSAGE_PATH}; written only if it "
                            f"exists; empty: none).")
    flags.add_argument("--log-format", choices=["text", "json"], default="text", help="(default: text)")
    flags.add_argument("--log-level", choices=["debug", "info", "warning", "error"], default="info",
                       help="(default: info)")
    return flags


def main(argv: Sequence[str] | None = None, prog: str = "candor sidecar") -> NoReturn:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["drain"]:
        from candor_sidecar.drain_hook import main as drain

        drain(argv[1:], prog)
    args = parser(prog).parse_args(argv)  # exits 2 on a bad flag, naming it
    try:
        config = build_config(args.config_path, args.state_dir, args.http_port, args.agent_port, args.grace_period,
                              args.control_socket, args.app_ports, args.termination_message_path)
    except FieldError as error:
        print(f"candor sidecar: invalid config: {error}", file=sys.stderr)
        sys.exit(CONFIG_ERROR_EXIT)
    import asyncio

    from candor_sidecar.logs import configure
    from candor_sidecar.service import run_sidecar

    configure(args.log_format, args.log_level)
    try:
        status = asyncio.run(run_sidecar(config))
    except OSError as error:  # a port in use, an address we cannot bind
        print(f"candor sidecar: cannot start: {error}", file=sys.stderr)
        sys.exit(1)
    sys.exit(status)
