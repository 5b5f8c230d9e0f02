"""`candor bench`: runs every script under bench/ and fails when one misses its target."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import click


@click.command("bench")
@click.option("--dir", "bench_dir", type=click.Path(file_okay=False, path_type=Path), default=Path("bench"),
              show_default=True, help="Folder holding the benchmark scripts.")
def bench_command(bench_dir: Path) -> None:
    """Run the benchmarks: each prints a table and exits non-zero on a missed target."""
    scripts = sorted(bench_dir.glob("*.py"))
    if not scripts:
        raise click.ClickException(f"no benchmark scripts in {bench_dir}")
    failed = [s.name for s in scripts if subprocess.run([sys.executable, str(s)], check=False).returncode != 0]
    if failed:
        raise click.ClickException("targets missed in: " + ", ".join(failed))
