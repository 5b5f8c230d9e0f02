"""`candor sidecar` (also `python -m candor_sidecar`)."""

from __future__ import annotations

import asyncio
import os
import sys

import click

from candor_sidecar.config import ConfigError, SidecarConfig, load_config, parse_config

CONFIG_ERROR_EXIT = 2


def build_config(config_path: str | None, state_dir: str | None, http_port: int | None,
                 agent_port: int | None) -> SidecarConfig:
    config = load_config(config_path) if config_path else parse_config({})
    if state_dir is not None:
        state_dir = os.path.abspath(state_dir)
    return config.with_overrides(state_dir=state_dir, http_port=http_port, agent_port=agent_port)


@click.command("sidecar")
@click.option("--config", "config_path", type=click.Path(dir_okay=False), default=None,
              help="Sidecar YAML config (the schema the operator writes). Defaults apply without one.")
@click.option("--state-dir", default=None, help="Directory of the tracer's journals (overrides stateDir).")
@click.option("--http-port", type=int, default=None, help="Port of /health, /livez, /readyz, /metrics (default 9898).")
@click.option("--agent-port", type=int, default=None, help="Port of the HAProxy agent-check (default 9999).")
@click.option("--log-format", type=click.Choice(["text", "json"]), default="text", show_default=True)
@click.option("--log-level", type=click.Choice(["debug", "info", "warning", "error"]), default="info",
              show_default=True)
def sidecar_command(config_path: str | None, state_dir: str | None, http_port: int | None, agent_port: int | None,
                    log_format: str, log_level: str) -> None:
    """Run the pod sidecar: /health, HAProxy agent-check, /metrics from the journals, flush on SIGTERM."""
    try:
        config = build_config(config_path, state_dir, http_port, agent_port)
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
