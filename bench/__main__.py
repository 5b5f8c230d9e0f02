"""`python -m bench` (`make bench`): every benchmark in the page's order, each as `python -m bench.<name>`
in a process of its own, then `python -m bench.report`. Exits non-zero when a benchmark missed a target or
could not run (the page is rendered all the same, from the results that exist)."""

from __future__ import annotations

import subprocess
import sys

from bench.report import benches
from bench.report import main as render_page


def main() -> int:
    failed = []
    for name in benches():
        print(f"== python -m bench.{name}", flush=True)
        if subprocess.run([sys.executable, "-m", f"bench.{name}"], check=False).returncode != 0:
            failed.append(name)
    render_page()
    if failed:
        print("missed a target or could not run: " + ", ".join(failed))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
