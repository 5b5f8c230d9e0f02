"""set_memory_source across fork(): a child inherits the app's source and reports its own figures with it."""

from __future__ import annotations

from pathlib import Path

import pytest

from candor_tracer.journal.reader import JournalSnapshot, read_totals
from harness.apps.tracer_apps import next_message, start_app, stop_app
from harness.processes.waiting import wait_until

pytestmark = pytest.mark.integration

# The source reports the pid of the process calling it, so a figure tells which process's source ran.
FORKING_APP = """
    from candor_tracer import MemoryFigures, set_memory_source

    go = os.environ["GO_FILE"]  # created by the test when it has read the journals
    set_memory_source(lambda: MemoryFigures(current=os.getpid(), limit=10**9))
    with trace(JOB, job="parent"):  # the parent's journal and heartbeat thread exist before the fork
        children = []
        for index in range(2):
            pid = os.fork()
            if pid == 0:
                if index == 1:  # this child picks its own source: the parent's must not change
                    set_memory_source(lambda: MemoryFigures(current=42, limit=43, inactive_file=1))
                with trace(JOB, job="child"):
                    say(child=index, pid=os.getpid())
                    while not os.path.exists(go):
                        time.sleep(0.02)
                os._exit(0)
            children.append(pid)
        say(parent=os.getpid())
        for pid in children:
            os.waitpid(pid, 0)
        say(done=True)
        sys.stdin.read()
"""


def test_forked_children_inherit_the_source_and_may_replace_their_own(tmp_path: Path,
                                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    state, go = tmp_path / "state", tmp_path / "go"
    state.mkdir()
    monkeypatch.setenv("GO_FILE", str(go))
    app = start_app(FORKING_APP, state, heartbeat_interval=0.1)
    try:
        pids: dict[int | str, int] = {}
        for message in (next_message(app) for _ in range(3)):
            if "parent" in message:
                pids["parent"] = message["parent"]
            else:
                pids[message["child"]] = message["pid"]

        def three_writers() -> JournalSnapshot | None:
            snapshot = read_totals(state)
            return snapshot if len(snapshot.writers) == 3 else None

        snapshot = wait_until(three_writers, timeout=20, what="parent and 2 children writing journals")
        figures = {w.pid: (w.memory_current, w.memory_max, w.inactive_file) for w in snapshot.writers}
        assert figures == {
            pids["parent"]: (pids["parent"], 10**9, None),
            pids[0]: (pids[0], 10**9, None),  # the inherited source, run in the child
            pids[1]: (42, 43, 1),  # its own
        }
        go.touch()
        assert next_message(app) == {"done": True}
        [parent] = read_totals(state).writers
        assert (parent.memory_current, parent.memory_max) == (pids["parent"], 10**9)
    finally:
        stop_app(app)
