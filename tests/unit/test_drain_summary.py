"""A drain's summary: the termination message the sidecar leaves, the operator's reading of it, and the text of
the pod's Drained Event (which scripts read back)."""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path

import pytest

from candor_operator.drain_events import (
    drained_event,
    event_message,
    event_name,
    read_event_message,
    slim_pod,
)
from candor_operator.injection import SIDECAR_NAME
from candor_sidecar.config import parse_config
from candor_sidecar.drain.history import OUTCOMES
from candor_sidecar.drain.state import DrainTally
from candor_sidecar.drain.summary import MAX_BYTES, DrainSummary, SummaryError, parse_summary
from candor_sidecar.drain.termination_message import TerminationMessage
from candor_sidecar.field_error import FieldError

REMOVED = DrainSummary(2.13, "removed", "preStop", heard=1, removed=2, silent=0, timed_out=0)


def test_the_message_is_one_line_of_json_with_counts() -> None:
    tally = DrainTally(heard=("10.0.0.1",), removed=("10.0.0.2", "10.0.0.3"), silent=(), pending=())
    summary = DrainSummary.of(2.1349, tally, "preStop")
    assert summary == REMOVED
    message = summary.message()
    assert message == ('{"drain":{"seconds":2.13,"outcome":"removed","begunBy":"preStop","heard":1,"removed":2,'
                       '"silent":0,"timedOut":0}}\n')
    assert parse_summary(message) == summary


def test_a_summary_cut_short_by_the_exit_says_so() -> None:
    tally = DrainTally(heard=(), removed=(), silent=(), pending=("10.0.0.1",))
    summary = DrainSummary.of(0.5, tally, "SIGTERM", at_exit=True)
    assert summary.outcome == "timeout" and summary.timed_out == 1
    assert json.loads(summary.message())["drain"]["atExit"] is True
    assert parse_summary(summary.message()) == summary


def test_even_the_largest_summary_is_far_below_the_kubelets_limit() -> None:
    big = DrainSummary(86400.0 * 365, "timeout", "SIGTERM", 999_999, 999_999, 999_999, 999_999, at_exit=True)
    assert len(big.message().encode()) < MAX_BYTES // 10


def test_an_empty_message_is_no_summary_and_unknown_keys_are_ignored() -> None:
    assert parse_summary("") is None
    assert parse_summary("  \n") is None
    later = json.loads(REMOVED.message())
    later["drain"]["addresses"] = ["10.0.0.1"]
    later["other"] = 1
    assert parse_summary(json.dumps(later)) == REMOVED


def test_the_first_line_is_read_when_a_shorter_summary_was_cut_after_a_longer_one() -> None:
    assert parse_summary(REMOVED.message() + 'r","begunBy":"preStop","heard":10}}\n') == REMOVED


@pytest.mark.parametrize(("message", "names"), [
    ("Traceback (most recent call last):", "not JSON"),
    ('["drain"]', "'drain' object"),
    ('{"drain": 3}', "'drain' object"),
    ('{"drain":{"outcome":"heard","begunBy":"preStop","heard":1,"removed":0,"silent":0,"timedOut":0}}',
     "drain.seconds"),
    ('{"drain":{"seconds":-1,"outcome":"heard","begunBy":"preStop","heard":1,"removed":0,"silent":0,"timedOut":0}}',
     "drain.seconds"),
    ('{"drain":{"seconds":1,"outcome":"lost","begunBy":"preStop","heard":1,"removed":0,"silent":0,"timedOut":0}}',
     "drain.outcome"),
    ('{"drain":{"seconds":1,"outcome":"heard","begunBy":"a b","heard":1,"removed":0,"silent":0,"timedOut":0}}',
     "drain.begunBy"),
    ('{"drain":{"seconds":1,"outcome":"heard","begunBy":"preStop","heard":true,"removed":0,"silent":0,'
     '"timedOut":0}}', "drain.heard"),
    ('{"drain":{"seconds":1,"outcome":"heard","begunBy":"preStop","heard":1,"removed":0,"silent":0}}',
     "drain.timedOut"),
])
def test_a_message_that_is_not_a_summary_is_an_error_naming_the_field(message: str, names: str) -> None:
    with pytest.raises(SummaryError, match=names):
        parse_summary(message)


def test_the_event_says_the_figures_and_what_the_outcome_means() -> None:
    kind, reason, message = drained_event(REMOVED)
    assert (kind, reason) == ("Normal", "Drained")
    assert message == ("drain took 2.13s (begun by preStop), outcome removed: heard by 1, removed by 2, "
                       "stopped polling 0, not heard in time 0 (of 3 HAProxys). Every HAProxy heard drain or took "
                       "the pod out of rotation (stopped polling the agent and checking /health).")


@pytest.mark.parametrize("outcome", OUTCOMES)
def test_every_outcome_reads_back_from_its_event_and_only_silent_and_timeout_warn(outcome: str) -> None:
    summary = DrainSummary(0.25, outcome, "SIGTERM", heard=1, removed=0, silent=0, timed_out=0,
                           at_exit=outcome == "timeout")
    kind, _, message = drained_event(summary)
    assert kind == ("Warning" if outcome in ("silent", "timeout") else "Normal")
    assert read_event_message(message) == summary
    assert "(of 1 HAProxy)." in message


def test_an_event_of_another_kind_reads_as_none() -> None:
    assert read_event_message("Candor's annotations written for HealthPolicy web") is None
    assert read_event_message(event_message(REMOVED)[:40]) is None


def test_the_event_name_is_one_per_pod_uid_and_a_valid_name() -> None:
    pod = slim_pod({"metadata": {"namespace": "ns", "name": "web-7d9f-abcde", "uid": "1234-abcd"}})
    assert event_name(pod) == "web-7d9f-abcde.drained.1234-abcd"
    long = slim_pod({"metadata": {"name": "a" * 207 + "-" + "b" * 45, "uid": "u" * 36}})
    assert event_name(long) == "a" * 207 + ".drained." + "u" * 36  # cut to 253, and never ending in "-"


def _pod(statuses: list[dict[str, object]], key: str = "initContainerStatuses") -> dict[str, object]:
    return {"metadata": {"namespace": "ns", "name": "web", "uid": "u1"}, "status": {key: statuses}}


def test_the_slim_pod_keeps_only_the_sidecars_termination() -> None:
    running = {"name": SIDECAR_NAME, "state": {"running": {"startedAt": "2026-01-01T00:00:00Z"}}}
    assert slim_pod(_pod([running])).message is None
    terminated = {"name": SIDECAR_NAME, "state": {"terminated": {"exitCode": 0, "message": REMOVED.message(),
                                                                 "finishedAt": "2026-01-01T00:00:09Z"}}}
    app = {"name": "app", "state": {"terminated": {"exitCode": 0, "message": "not the sidecar's"}}}
    slim = slim_pod(_pod([terminated]))
    assert (slim.namespace, slim.name, slim.uid, slim.finished_at) == ("ns", "web", "u1", "2026-01-01T00:00:09Z")
    assert slim.message == REMOVED.message()
    assert slim_pod(_pod([app])).message is None
    assert slim_pod(_pod([app, terminated], "containerStatuses")).message == REMOVED.message()
    assert slim_pod({"metadata": {"name": "bare"}}).message is None


def test_a_pod_is_leaving_once_marked_for_deletion_or_ended() -> None:
    running = _pod([])
    assert not slim_pod(running).leaving  # a sidecar restarted alone: the pod stays
    assert slim_pod({**running, "metadata": {"name": "web", "deletionTimestamp": "2026-01-01T00:00:00Z"}}).leaving
    for phase in ("Succeeded", "Failed"):
        assert slim_pod({**running, "status": {"phase": phase}}).leaving


def test_the_summary_is_written_over_the_file_the_kubelet_made(tmp_path: Path) -> None:
    log = tmp_path / "termination-log"
    log.write_text("")
    message = TerminationMessage(str(log))
    longer = DrainSummary(12.5, "timeout", "SIGTERM", 10, 10, 10, 10, at_exit=True).message()
    assert message.write(longer)
    assert message.write(REMOVED.message())
    assert log.read_text() == REMOVED.message()
    assert parse_summary(log.read_text()) == REMOVED


def test_no_file_is_created_and_a_failure_is_said_once_at_debug(tmp_path: Path,
                                                                caplog: pytest.LogCaptureFixture) -> None:
    missing = tmp_path / "dev" / "termination-log"
    message = TerminationMessage(str(missing))
    with caplog.at_level(logging.DEBUG, "candor.sidecar"):
        assert not message.write(REMOVED.message())
        assert not message.write(REMOVED.message())
    assert not missing.exists()
    said = [record for record in caplog.records if "no termination message" in record.getMessage()]
    assert len(said) == 1 and said[0].levelno == logging.DEBUG
    assert not TerminationMessage(None).write(REMOVED.message())


def test_a_fifo_at_the_path_neither_blocks_nor_is_written(tmp_path: Path) -> None:
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    assert not TerminationMessage(str(fifo)).write(REMOVED.message())  # no reader: refused at once, not waited on
    reader = os.open(fifo, os.O_RDONLY | os.O_NONBLOCK)  # a reader, so opening it to write would succeed
    try:
        assert not TerminationMessage(str(fifo)).write(REMOVED.message())
        assert os.read(reader, 10) == b""  # nothing was written to it
    finally:
        os.close(reader)


def test_the_path_is_a_flag_defaulting_to_the_kubelets() -> None:
    config = parse_config({})
    assert config.termination_message_path == "/dev/termination-log"
    assert config.with_overrides(termination_message_path="/tmp/x").termination_message_path == "/tmp/x"
    assert config.with_overrides(termination_message_path="").termination_message_path is None
    with pytest.raises(FieldError, match="--termination-message-path"):
        config.with_overrides(termination_message_path="relative")
    with pytest.raises(FieldError, match="unknown key"):
        parse_config({"terminationMessagePath": "/tmp/x"})
