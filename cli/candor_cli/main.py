"""`candor`: one command, a subcommand per part (sidecar, operator, render, demo, check).

`candor sidecar` runs in every pod, so it goes straight to the sidecar's own small argument parser;
every other subcommand goes through the click group in candor_cli.group.
"""

from __future__ import annotations

import sys


def main() -> None:
    if sys.argv[1:3] == ["sidecar", "drain"]:  # the preStop hook: nothing else of Candor's loads (drain_hook)
        from candor_sidecar.drain_hook import main as drain

        drain(sys.argv[3:])
    if sys.argv[1:2] == ["sidecar"]:
        from candor_sidecar.no_openssl import keep_openssl_out

        keep_openssl_out()  # before any other module of Candor's loads asyncio or hashlib
        from candor_sidecar.cli import main as sidecar

        sidecar(sys.argv[2:])
    from candor_cli.group import group

    group()


if __name__ == "__main__":
    main()
