"""One resizer worker as its own process (`python -m candor_demo.resizer_worker`), so it can be SIGKILLed.

It owns its own tracer journal (CANDOR_STATE_DIR is inherited) and tells its parent about each job on
stdout, one line each: `start <slot> <monotonic> <length>` and `done <slot> <seconds>`; the parent keeps the
naive counter, as a forking job server would.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import threading
from types import FrameType

from candor_demo.container_memory import report_process_memory
from candor_demo.jobs import run_worker
from candor_demo.truth import TruthWriter


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--slot", type=int, required=True)
    parser.add_argument("--max-job", type=float, required=True)
    parser.add_argument("--truth-file", required=True)
    parser.add_argument("--seed", type=int, default=None)
    args = parser.parse_args(argv)

    report_process_memory()
    stop = threading.Event()

    def on_term(signum: int, frame: FrameType | None) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, on_term)
    signal.signal(signal.SIGINT, on_term)
    truth = TruthWriter(args.truth_file)

    def on_start(slot: int, started: float, length: float) -> None:
        print(f"start {slot} {started:.6f} {length:.6f}", flush=True)

    def on_done(slot: int, seconds: float) -> None:
        print(f"done {slot} {seconds:.6f}", flush=True)

    # A thread, so the main thread stays free to take the signal while the job waits.
    worker = threading.Thread(target=run_worker, name=f"worker-{args.slot}", daemon=True,
                              args=(args.slot, args.max_job, stop, truth, on_start, on_done, args.seed))
    worker.start()
    parent = os.getppid()
    while worker.is_alive():
        worker.join(0.5)
        if os.getppid() != parent:  # the app died without telling us: do not outlive it
            stop.set()
    truth.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
