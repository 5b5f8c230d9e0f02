"""`candor demo`: replay a job-seconds and health incident on this machine with real processes, measure it,
write a report."""

from __future__ import annotations

import dataclasses
import json
import shutil
import signal
import sys
import tempfile
from pathlib import Path
from types import FrameType
from typing import Any

import click

from candor_demo.preflight import MissingTools, ensure_tools
from candor_demo.settings import settings_for

EXIT_MISSED, EXIT_FAILED, EXIT_MISSING_TOOLS = 1, 2, 3
STARTUP_SECONDS = 12.0  # roughly: sidecars, apps, HAProxy, Prometheus (plus its first scrape of every target)
EXIT_INTERRUPTED = 130


@click.command("demo")
@click.option("--quick", is_flag=True, help="The ~60 s version (2 s scrapes, shorter jobs) used by the tests.")
@click.option("--report-dir", default="demo-report", show_default=True, type=click.Path(file_okay=False),
              help="Where report.md, the PNG charts and figures.json go.")
@click.option("--keep-workdir", is_flag=True, help="Keep the processes' state dirs, journals and truth files.")
@click.option("--haproxy", "haproxy_binary", metavar="PATH", help="HAProxy binary (default: Debian's, or on PATH).")
@click.option("--prometheus", "prometheus_binary", metavar="PATH",
              help="Prometheus binary (default: Debian's, or on PATH).")
def demo_command(quick: bool, report_dir: str, keep_workdir: bool, haproxy_binary: str | None,
                 prometheus_binary: str | None) -> None:
    """Replay a job-seconds and health incident locally and measure Candor.

    Three resizer instances with ten workers each, their Candor sidecars, a real HAProxy configured from a
    HealthPolicy, a real Prometheus, a load generator and scripted faults (memory pressure, SIGKILL, SIGTERM).
    Exits 0 when every self-check passes, 1 when Candor missed a target, 2 when the run failed, 3 when
    HAProxy or Prometheus is missing.
    """
    settings = settings_for(quick)
    try:
        tools = ensure_tools({"haproxy": haproxy_binary, "prometheus": prometheus_binary},
                             say=lambda text: click.echo(text, err=True))
    except MissingTools as error:
        click.echo(str(error), err=True)
        sys.exit(EXIT_MISSING_TOOLS)

    # Heavy imports only once we know the demo can run.
    from candor_demo.analysis import compute
    from candor_demo.charts import write_charts
    from candor_demo.haproxy_process import HAProxyError
    from candor_demo.instances import InstanceError
    from candor_demo.policy import policy_yaml
    from candor_demo.progress import Progress
    from candor_demo.prometheus_process import PrometheusError
    from candor_demo.report import checks_text, table_rows, text_table, write_report
    from candor_demo.scenario import Demo, ScenarioError

    report = Path(report_dir)
    report.mkdir(parents=True, exist_ok=True)
    workdir = Path(tempfile.mkdtemp(prefix="candor-demo-"))
    expected = settings.end_at + STARTUP_SECONDS + settings.scrape_interval
    progress = Progress(expected)
    progress.message(f"candor demo ({settings.name}): about {expected:.0f} s; processes' files in {workdir}")
    # SIGTERM to the demo unwinds like Ctrl-C, so every process it started is stopped on the way out.
    signal.signal(signal.SIGTERM, _interrupt)
    try:
        with Demo(settings, workdir, progress, tools) as demo:
            progress.status_lines = demo.status_lines
            progress.start()
            try:
                record = demo.run()
                progress.set_phase("querying Prometheus")
                assert demo.prometheus is not None
                figures = compute(record, demo.prometheus)
                progress.set_phase("done")
            finally:
                progress.stop()
                _keep_logs(workdir, report)
    except (ScenarioError, InstanceError, HAProxyError, PrometheusError, OSError) as error:
        click.echo(f"\ncandor demo: the run failed: {error}", err=True)
        click.echo(f"logs: {report / 'logs'}", err=True)
        sys.exit(EXIT_FAILED)
    except KeyboardInterrupt:
        click.echo("\ncandor demo: interrupted; every process it started has been stopped", err=True)
        sys.exit(EXIT_INTERRUPTED)
    finally:
        if not keep_workdir:
            shutil.rmtree(workdir, ignore_errors=True)

    (report / "healthpolicy.yaml").write_text(policy_yaml(settings, record.load_weights))
    charts = write_charts(record, figures, report)
    path = write_report(record, figures, report, charts)
    (report / "figures.json").write_text(json.dumps(_figures_json(record, figures), indent=2))
    click.echo("")
    click.echo(text_table(table_rows(record, figures)))
    click.echo("")
    click.echo(checks_text(figures))
    click.echo(f"\nreport: {path}  charts: {', '.join(str(c) for c in charts)}")
    if not figures.passed:
        click.echo("candor demo: Candor missed at least one target (see FAIL above)", err=True)
        sys.exit(EXIT_MISSED)


def _interrupt(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt


def _keep_logs(workdir: Path, report: Path) -> None:
    """The processes' logs and configs, for when something looks off."""
    logs = report / "logs"
    shutil.rmtree(logs, ignore_errors=True)
    logs.mkdir(parents=True, exist_ok=True)
    for pattern in ("*/app.log", "*/sidecar.log", "*/sidecar.yaml", "haproxy.cfg", "haproxy/haproxy.log",
                    "prometheus/prometheus.yml", "prometheus/prometheus.log"):
        for source in workdir.glob(pattern):
            shutil.copy(source, logs / f"{source.parent.name}-{source.name}" if source.parent != workdir
                        else logs / source.name)


def _figures_json(record: Any, figures: Any) -> dict[str, Any]:
    """Machine-readable figures (the tests read these)."""
    return {
        "settings": dataclasses.asdict(record.settings),
        "passed": figures.passed,
        "checks": [dataclasses.asdict(check) for check in figures.checks],
        "intervals": {name: [dataclasses.asdict(row) for row in rows] for name, rows in figures.intervals.items()},
        "sigkill": dataclasses.asdict(figures.sigkill) if figures.sigkill else None,
        "sigterm": dataclasses.asdict(figures.sigterm) if figures.sigterm else None,
        "out_delay": figures.out_delay,
        "agent_down_delay": figures.agent_down_delay,
        "ramp_weights": figures.ramp_weights,
        "ramp_seconds": figures.ramp_seconds,
        "served_while_out": figures.served_while_out,
        "load_weights": record.load_weights,
        "starve": dataclasses.asdict(figures.starve) if figures.starve else None,
        "starve_note": record.starve_note,
        "events": [[at - record.started, text] for at, text in record.events],
        "wall_minus_monotonic": record.wall_minus_mono,
        "raw_samples": figures.raw,
    }
