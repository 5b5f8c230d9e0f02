"""docs/benchmarks.md is what `python -m bench.report` renders from the committed results, never edited by hand;
and a bench's results file becomes its section of the page."""

from __future__ import annotations

import importlib
import json
import shutil
from pathlib import Path

from bench.report import PAGE, benches, render
from bench.results import Results

BENCH_DIR = Path(__file__).resolve().parents[2] / "bench"


def test_the_benchmarks_page_is_the_render_of_the_committed_results() -> None:
    assert PAGE.exists() and PAGE.read_text() == render(), (
        "docs/benchmarks.md is stale: run `make bench` (measure again) or `python -m bench.report` "
        "(render the committed bench/results/*.json)")


def test_every_bench_module_is_on_the_page() -> None:
    modules = {path.stem for path in BENCH_DIR.glob("*.py")} - {"__init__", "__main__", "report", "results", "scratch"}
    assert set(benches()) == modules


def test_a_run_s_results_are_rendered_and_a_bench_without_results_says_so(tmp_path: Path) -> None:
    bench_dir = tmp_path / "bench"
    bench_dir.mkdir()
    shutil.copy(BENCH_DIR / "tracer.py", bench_dir / "tracer.py")
    shutil.copy(BENCH_DIR / "drain.py", bench_dir / "drain.py")
    results = Results("tracer")
    results.table("benchmark", "measured", "target", "result").add("scrape | 10,000 in flight", "1.2 ms", "<= 10 ms",
                                                                  "ok")
    results.target("scrape", "<= 10 ms", "1.2 ms", True)
    results.target("read_totals", "<= 50 ms", "75 ms", False)
    path = results.write(tmp_path / "results")

    written = json.loads(path.read_text())
    assert written["machine"]["cpus"] >= 1 and written["machine"]["kernel"] and written["date"]
    assert written["command"].startswith("python -m bench.tracer") and written["met"] is False
    page = render(tmp_path / "results", bench_dir)
    assert "| scrape \\| 10,000 in flight | 1.2 ms | <= 10 ms | ok |" in page
    assert "Targets: 1 of 2 met; missed: read_totals (target <= 50 ms, measured 75 ms)." in page
    assert f"{written['machine']['cpus']} CPUs" in page and written["date"] in page
    assert "Not measured on this tree yet: run `python -m bench.drain`." in page
    assert page.index("## Tracer") < page.index("## Drain")


def test_the_benchmarks_and_the_harness_import_without_path_edits() -> None:
    # Run from the repository root as modules, they find candor_*, harness and bench as installed or at the root.
    sources = [*BENCH_DIR.glob("*.py"), *(BENCH_DIR.parent / "harness").rglob("*.py")]
    assert [str(path) for path in sources if "sys.path" in path.read_text()] == []
    for name in benches():
        importlib.import_module(f"bench.{name}")
