"""The live view: plain lines when not a TTY, an in-place ANSI block when it is."""

from __future__ import annotations

import io

from candor_demo.progress import Progress


def test_plain_lines_without_a_tty() -> None:
    out = io.StringIO()
    progress = Progress(60.0, stream=out)
    progress.start()
    progress.set_phase("steady load")
    progress.event("resizer-2 allocated")
    progress.stop()
    lines = out.getvalue().splitlines()
    assert lines[0].endswith("== steady load") and lines[1].endswith("resizer-2 allocated")
    assert "\x1b[" not in out.getvalue()


def test_a_tty_gets_a_redrawn_block_with_status_lines() -> None:
    out = io.StringIO()
    progress = Progress(60.0, stream=out, status_lines=lambda: ["resizer-1  UP"], interactive=True)
    progress.set_phase("memory fault")
    progress.event("HAProxy took resizer-2 out")
    progress.message("a line that stays")
    progress.stop()
    text = out.getvalue()
    assert "\x1b[2K" in text and "memory fault" in text and "resizer-1  UP" in text
    assert "HAProxy took resizer-2 out" in text and "a line that stays\n" in text
