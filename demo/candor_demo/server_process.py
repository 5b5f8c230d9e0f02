"""What the real-server launchers (HAProxy, Prometheus) share: a binary run in a work directory, its
output in a log file, a clean stop, and errors that carry that output."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import tempfile
from collections.abc import Sequence
from pathlib import Path
from types import TracebackType
from typing import Self


class ServerProcess:
    """Subclasses set `name`, `error` and `log_name` and implement `start()`; `stop()` or the `with` ends it."""

    name = "server"
    error: type[RuntimeError] = RuntimeError
    log_name = "server.log"

    def __init__(self, binary: str, workdir: str | os.PathLike[str] | None) -> None:
        self.binary = binary
        self._own_workdir = workdir is None
        self.workdir = Path(workdir) if workdir is not None else Path(tempfile.mkdtemp(prefix=f"candor-{self.name}-"))
        self.log_path = self.workdir / self.log_name
        self.process: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = 10.0) -> Self:
        raise NotImplementedError

    def _spawn(self, args: Sequence[str]) -> None:
        with self.log_path.open("wb") as log:
            self.process = subprocess.Popen(list(args), cwd=self.workdir, stdout=log, stderr=subprocess.STDOUT,
                                            stdin=subprocess.DEVNULL)

    def stop(self, timeout: float = 10.0) -> None:
        """SIGTERM, then SIGKILL if it lingers; removes the work directory when it was ours."""
        process, self.process = self.process, None
        if process is not None and process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        if self._own_workdir:
            shutil.rmtree(self.workdir, ignore_errors=True)

    def __enter__(self) -> Self:
        return self.start() if self.process is None else self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None,
                 trace: TracebackType | None) -> None:
        self.stop()

    @property
    def pid(self) -> int | None:
        return self.process.pid if self.process is not None else None

    def output(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except OSError:
            return ""

    def _raise_if_dead(self) -> None:
        if self.process is None or self.process.poll() is not None:
            raise self.error(f"{self.name} is not running:\n{self.output()}")

    def _fail_start(self, problem: str) -> None:
        """Stop what was started and raise with its output (read first: stopping removes our work directory)."""
        output = self.output()
        self.stop()
        raise self.error(f"{problem}:\n{output}")
