"""`candor sidecar` (also `python -m candor_sidecar`), and `candor sidecar drain`, its container's preStop hook."""

from __future__ import annotations

import asyncio
import os
import sys

import click

from candor_sidecar.config import ConfigError, SidecarConfig, load_config, parse_config
from candor_sidecar.control import DEFAULT_SOCKET, SOCKET_ENV, ControlError, send_command

CONFIG_ERROR_EXIT = 2


def build_config(config_path: str | None, state_dir: str | None, http_port: int | None,
                 agent_port: int | None, grace_period: float | None = None,
                 control_socket: str | None = None) -> SidecarConfig:
    config = load_config(config_path) if config_path else parse_config({})
    if state_dir is not None:
        state_dir = os.path.abspath(state_dir)
    if control_socket is not None and control_socket != "":
        control_socket = os.path.abspath(control_socket)
    return config.with_overrides(state_dir=state_dir, http_port=http_port, agent_port=agent_port,
                                 grace_period=grace_period, control_socket=control_socket or None)




@click.group("sidecar", invoke_without_command=True)
@click.option("--config", "config_path", type=click.Path(dir_okay=False), default=None,
              help="Sidecar YAML config (the schema the operator writes). Defaults apply without one.")
@click.option("--state-dir", default=None, help="Directory of the tracer's journals (overrides stateDir).")
@click.option("--http-port", type=int, default=None, help="Port of /health, /livez, /readyz, /metrics (default 9898).")
@click.option("--agent-port", type=int, default=None, help="Port of the HAProxy agent-check (default 9999).")
@click.option("--termination-grace-period", "grace_period", type=float, default=None,
              help="The pod's terminationGracePeriodSeconds (default 30): bounds the drain wait and its self-lift.")
@click.option("--control-socket", envvar=SOCKET_ENV, default=None,
              help=f"Unix socket for `candor sidecar drain`, in a directory only the sidecar container mounts "
                   f"(${SOCKET_ENV}; default none: a drain starts with SIGTERM only).")
@click.option("--log-format", type=click.Choice(["text", "json"]), default="text", show_default=True)
@click.option("--log-level", type=click.Choice(["debug", "info", "warning", "error"]), default="info",
              show_default=True)
@click.pass_context
def sidecar_command(ctx: click.Context, config_path: str | None, state_dir: str | None, http_port: int | None,
                    agent_port: int | None, grace_period: float | None, control_socket: str | None, log_format: str,
                    log_level: str) -> None:
    """Run the pod sidecar: /health, HAProxy agent-check, /metrics from the journals, drain and flush on termination."""
    if ctx.invoked_subcommand is not None:
        return
    try:
        config = build_config(config_path, state_dir, http_port, agent_port, grace_period, control_socket)
    except ConfigError as error:
        click.echo(f"candor sidecar: invalid config: {error}", err=True)
        sys.exit(CONFIG_ERROR_EXIT)
    from candor_sidecar.logs import configure
    from candor_sidecar.service import run_sidecar

    configure(log_format, log_level)
    try:
        status = asyncio.run(run_sidecar(config))
    except OSError as error:  # a port in use, an address we cannot bind
        click.echo(f"candor sidecar: cannot start: {error}", err=True)
        sys.exit(1)
    sys.exit(status)


@sidecar_command.command("drain")
@click.option("--control-socket", envvar=SOCKET_ENV, default=DEFAULT_SOCKET, show_default=True,
              help=f"The running sidecar's control socket (${SOCKET_ENV}).")
def drain_command(control_socket: str) -> None:
    """Make the running sidecar answer `drain` (its container's preStop hook); returns at once.

    The app containers' preStop hooks (GET /drain/wait) hold each app's SIGTERM until every HAProxy has
    heard it. Only a process in the sidecar container can reach the socket.
    """
    try:
        answer = send_command(control_socket, "drain")
    except ControlError as error:
        click.echo(f"candor sidecar drain: {error}", err=True)
        sys.exit(1)
    click.echo(answer)
