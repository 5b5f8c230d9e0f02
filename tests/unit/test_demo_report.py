"""The report's table: every measured figure, with the naive counter, Candor and the truth side by side."""

from __future__ import annotations

from pathlib import Path

from candor_demo.analysis import Check, Figures, IntervalFigure, LostWork
from candor_demo.report import (
    checks_text,
    haproxy_state_changes,
    markdown_table,
    table_rows,
    text_table,
    write_report,
)
from candor_demo.scenario import RunRecord, TermRecord
from candor_demo.settings import QUICK


def _figures() -> tuple[RunRecord, Figures]:
    record = RunRecord(QUICK, wall_minus_mono=0.0, started=0.0, launched=0.0, ended=50.0)
    record.term = TermRecord("resizer-1", app_term_at=31.0, app_exit_at=31.1, sidecar_term_at=31.2,
                             sidecar_exit_at=33.0, sidecar_status=0)
    row = IntervalFigure(0.0, 2.0, truth=10.0, traced=10.05, naive=6.0)
    figures = Figures(
        intervals={name: [row] for name in record.instance_names},
        sigkill=LostWork("SIGKILL resizer-3 worker 4", 31.0, 30.95, 26.9, 4.1, 0.0),
        sigterm=LostWork("SIGTERM resizer-1", 410.0, 409.99, 400.0, 1.5, 0.0),
        out_delay=0.4, agent_down_delay=0.25, ramp_weights=[1, 2, 5, 100], ramp_seconds=6.0,
        checks=[Check("ramp", True, "weights 1, 2, 5, 100", "≥ 3"), Check("kill", False, "0.2 s", "≤ 0.1 s")])
    return record, figures


def test_rows_carry_each_method_s_figures() -> None:
    record, figures = _figures()
    rows = {row[0]: row[1:] for row in table_rows(record, figures)}
    assert rows["resizer-3 (jobs ≤ 8 s): busy-worker error per scrape, mean / worst"][:2] == ("40.0 % / 40.0 %",
                                                                                              "0.5 % / 0.5 %")
    assert rows["SIGKILL resizer-3 worker 4: work seconds lost (truth − Prometheus)"][:2] == ("4.100 s", "0.050 s")
    assert rows["resizer-1 sidecar after SIGTERM: exit status, seconds until the final scrape let it go"][1] == \
        "0, 1.8 s"


def test_markdown_and_text_tables_hold_the_same_cells() -> None:
    record, figures = _figures()
    rows = table_rows(record, figures)
    markdown, text = markdown_table(rows), text_table(rows)
    assert markdown.splitlines()[0] == "| figure | naive counter | Candor | truth / target |"
    for row in rows:
        for cell in row:
            assert cell in text
    assert "FAIL  kill: 0.2 s (target ≤ 0.1 s)" in checks_text(figures)


def test_haproxy_state_changes_keep_haproxy_s_reasons() -> None:
    log = ('[WARNING]  (7) : Server resizer/resizer-2 is DOWN, reason: via agent : down (memory 89% <3E> 80%)\n'
           'Server resizer/resizer-2 is DOWN, reason: via agent : down (memory 89% <3E> 80%)\n'
           '<133>Proxy load started.\nServer resizer/resizer-1 enters drain state.\n'
           + 'Server resizer/resizer-1 remains in forced drain mode.\n' * 3)
    assert haproxy_state_changes(log) == [
        "Server resizer/resizer-2 is DOWN, reason: via agent : down (memory 89% > 80%)",
        "Server resizer/resizer-1 enters drain state.",
        "Server resizer/resizer-1 remains in forced drain mode. (×3)"]


def test_the_report_shows_the_table_the_checks_and_the_rendered_backend(tmp_path: Path) -> None:
    record, figures = _figures()
    record.haproxy_config = ("frontend load\n    default_backend resizer\n\nbackend resizer\n    mode http\n"
                             "    server resizer-1 127.0.0.1:1 port 2 agent-port 3\n")
    record.events = [(5.0, "resizer-2 allocated")]
    text = write_report(record, figures, tmp_path, []).read_text()
    assert "**Candor MISSED at least one target.**" in text  # one check failed
    assert markdown_table(table_rows(record, figures)) in text
    assert "| ❌ FAIL | kill | 0.2 s | ≤ 0.1 s |" in text
    backend = text.split("## What HAProxy ran: the backend rendered from the HealthPolicy")[1].split("## ")[0]
    assert backend.strip().startswith("```\nbackend resizer") and "default_backend" not in backend
    assert "|     5.0 s | resizer-2 allocated |" in text


def test_failed_requests_are_counted_from_the_deletion_on_and_judged() -> None:
    from candor_demo.analysis import _request_figures, self_checks
    from candor_demo.loadgen import RequestResult

    record, _ = _figures()
    assert record.term is not None
    record.term.deleted_at, record.term.drain_outcome, record.term.haproxy_status_at_term = 29.5, "heard", "DRAIN"
    record.requests = [RequestResult(10.0, 0, "", 0.1), RequestResult(30.0, 200, "resizer-1", 0.1),
                       RequestResult(31.05, 200, "resizer-1", 0.1), RequestResult(32.0, 200, "resizer-2", 0.1)]
    figures = Figures()
    _request_figures(record, figures)
    assert (figures.failed_requests, figures.failed_while_leaving, figures.served_after_sigterm) == (1, 0, 1)
    assert figures.drain_wait == 1.5
    rows = {row[0]: row[1:] for row in table_rows(record, figures)}
    assert rows["requests through HAProxy: served / failed (failed from resizer-1's deletion on)"][1] == "3 / 1 (0)"
    (check,) = [c for c in self_checks(record, figures) if c.name.startswith("no request failed")]
    assert check.passed
    record.requests.append(RequestResult(33.0, 502, "", 0.1, "HTTP 502 Bad Gateway"))  # the target is missed
    record.requests.append(RequestResult(34.0, 200, "resizer-2", 0.1, retried=True))
    _request_figures(record, figures)
    (check,) = [c for c in self_checks(record, figures) if c.name.startswith("no request failed")]
    assert not check.passed and check.measured.startswith("1 failed") and "HTTP 502 Bad Gateway" in check.measured
    rows = {row[0]: row[1:] for row in table_rows(record, figures)}
    assert rows["requests retried on a new connection: HAProxy closed a kept-alive one unanswered"][1] == "1"


def test_a_run_without_cpu_cgroups_says_why_the_load_weights_phase_was_skipped(tmp_path: Path) -> None:
    record, figures = _figures()
    record.starve_note = "no CPU cgroups on this host (not root): load weights off, no CPU starvation"
    rows = {row[0]: row[1:] for row in table_rows(record, figures)}
    assert rows["CPU-starved instance: load weights"] == ("—", "skipped", record.starve_note)
    text = write_report(record, figures, tmp_path, []).read_text()
    assert "Skipped on this run: no CPU cgroups on this host (not root)" in text
