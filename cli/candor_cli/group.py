"""The `candor` click group.

Each subcommand lives with its part (sidecar, operator, demo) and is imported only when invoked, so
`candor render` never pays for kopf and apps importing the tracer never pay for click.
"""

from __future__ import annotations

import importlib

import click

# name -> ("module:attribute" of a click.Command, short help shown by `candor --help`)
SUBCOMMANDS: dict[str, tuple[str, str]] = {
    "sidecar": ("candor_cli.group:sidecar_command", "Run the pod sidecar: /health, agent-check, /metrics."),
    "operator": ("candor_operator.cli:operator_command", "Run the HealthPolicy operator (kopf)."),
    "finalize": ("candor_operator.cli:finalize_command",
                 "Delete every HealthPolicy and wait until the operator finalized it (before an uninstall)."),
    "render": ("candor_operator.cli:render_command", "Print the annotations and HAProxy backend of a policy."),
    "check": ("candor_operator.cli:check_command",
              "Tell what is wrong with Candor in a cluster (CRD, operator, webhook, policies, pods)."),
    "demo": ("candor_demo.cli:demo_command", "Replay a job-seconds and health incident locally and measure Candor."),
}


class LazyGroup(click.Group):
    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(SUBCOMMANDS)

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        target = SUBCOMMANDS.get(cmd_name)
        if target is None:
            return None
        module_name, attribute = target[0].split(":")
        command = getattr(importlib.import_module(module_name), attribute)
        assert isinstance(command, click.Command)
        return command

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        # Help must not import every part: show the short help kept here.
        rows = [(name, SUBCOMMANDS[name][1]) for name in self.list_commands(ctx)]
        with formatter.section("Commands"):
            formatter.write_dl(rows)


@click.group(cls=LazyGroup)
@click.version_option(package_name="candor")
def group() -> None:
    """Candor: honest health for load balancers, honest job-seconds for Prometheus."""


@click.command("sidecar", add_help_option=False,
               context_settings={"ignore_unknown_options": True, "allow_extra_args": True})
@click.pass_context
def sidecar_command(ctx: click.Context) -> None:
    """The sidecar reads its own flags (`candor sidecar --help`); candor_cli.main calls it without click."""
    from candor_sidecar.no_openssl import keep_openssl_out

    keep_openssl_out()  # before any other module of Candor's loads asyncio or hashlib
    from candor_sidecar.cli import main

    main(ctx.args)
