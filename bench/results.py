"""What a benchmark measured, written to bench/results/<name>.json for `python -m bench.report`.

A run records its tables (the rows it prints), each target it holds itself to with the figure measured and
whether it was met, the command line, the date and the machine it ran on. docs/benchmarks.md is rendered
from these files only, so its figures are always ones a run measured, never pasted.
"""

from __future__ import annotations

import datetime
import json
import os
import platform
import sys
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

RESULTS_DIR = Path(__file__).resolve().parent / "results"


@dataclass
class Table:
    columns: list[str]
    rows: list[list[str]] = field(default_factory=list)
    title: str = ""

    def add(self, *cells: object) -> None:
        if len(cells) != len(self.columns):
            raise ValueError(f"a row of {len(cells)} cells in a table of {len(self.columns)} columns: {cells}")
        self.rows.append([str(cell) for cell in cells])


@dataclass
class Target:
    name: str  # what is held to it, as the bench's table says
    target: str  # e.g. "<= 5 ms"
    measured: str
    met: bool


def machine() -> dict[str, Any]:
    """The machine a figure was measured on: CPUs (count and model), kernel, Python."""
    model = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {"cpus": os.cpu_count() or 0, "cpu_model": model or platform.processor() or "unknown",
            "kernel": f"{platform.system()} {platform.release()}", "python": platform.python_version()}


@dataclass
class Results:
    """One run of bench `name` (its module under bench/): fill in tables, targets and notes, then `write()`."""

    name: str
    tables: list[Table] = field(default_factory=list)
    targets: list[Target] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def table(self, *columns: str, title: str = "") -> Table:
        table = Table(list(columns), title=title)
        self.tables.append(table)
        return table

    def target(self, name: str, target: str, measured: str, met: bool) -> bool:
        self.targets.append(Target(name, target, measured, met))
        return met

    def note(self, text: str) -> None:
        self.notes.append(text)

    def measures(self, rows: list[tuple[str, str, str, bool]], widths: tuple[int, int, int],
                 title: str = "") -> bool:
        """Print and record a table of (measure, value, target, met) rows, a target for each row that has one
        (a row without a target is context); True when every target was met."""
        name_width, value_width, target_width = widths
        table = self.table("measure", "value", "target", "result", title=title)
        print(f"{'measure':<{name_width}} {'value':>{value_width}} {'target':>{target_width}}  result")
        for name, value, target, ok in rows:
            result = ("ok" if ok else "MISSED") if target else ""
            print(f"{name:<{name_width}} {value:>{value_width}} {target:>{target_width}}  {result}")
            table.add(name.strip(), value, target, result)
            if target:
                self.target(name.strip(), target, value, ok)
        return all(ok for *_, ok in rows)

    def write(self, directory: Path = RESULTS_DIR) -> Path:
        directory.mkdir(parents=True, exist_ok=True)
        path = directory / f"{self.name}.json"
        document = {
            "bench": self.name,
            "command": " ".join(["python -m", f"bench.{self.name}", *sys.argv[1:]]),
            "date": datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC"),
            "machine": machine(),
            "met": all(target.met for target in self.targets),
            "tables": [asdict(table) for table in self.tables],
            "targets": [asdict(target) for target in self.targets],
            "notes": self.notes,
        }
        path.write_text(json.dumps(document, indent=2) + "\n")
        print(f"results: {path}")
        return path
