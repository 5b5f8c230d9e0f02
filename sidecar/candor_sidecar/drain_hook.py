"""`candor sidecar drain`: the sidecar container's preStop hook, which makes the running sidecar answer `drain`.

The kubelet runs it in the sidecar container (so in its cgroup, whose CPU request is a few millicores) when
the pod is deleted, and the drain, so each app's SIGTERM, waits for it. So it loads only what it uses:
`candor` hands `sidecar drain` here before anything else of Candor's is imported, and the injected hook
names the socket (`--control-socket`), so the default's home, candor_tracer.pod_contract (whose package
loads the tracer), is imported only for a hand-run command without the flag.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from typing import NoReturn


def parser(prog: str) -> argparse.ArgumentParser:
    flags = argparse.ArgumentParser(
        prog=f"{prog} drain",
        description="Make the running sidecar answer `drain` (its container's preStop hook); returns at once. "
                    "The app containers' preStop hooks (GET /drain/wait) hold each app's SIGTERM until every "
                    "HAProxy has heard it. Only a process in the sidecar container can reach the socket.")
    flags.add_argument("--control-socket", metavar="PATH",
                       help="The running sidecar's control socket (default: $CANDOR_CONTROL_SOCKET, else "
                            "the pod contract's path).")
    return flags


def _default_socket() -> str:
    from candor_tracer.pod_contract import CONTROL_SOCKET, CONTROL_SOCKET_ENV

    return os.environ.get(CONTROL_SOCKET_ENV, CONTROL_SOCKET)


def main(argv: Sequence[str], prog: str = "candor sidecar") -> NoReturn:
    args = parser(prog).parse_args(argv)
    from candor_sidecar.control_client import ControlError, send_command

    try:
        answer = send_command(args.control_socket or _default_socket(), "drain")
    except ControlError as error:
        print(f"{prog} drain: {error}", file=sys.stderr)
        sys.exit(1)
    print(answer)
    sys.exit(0)
