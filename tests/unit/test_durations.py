from __future__ import annotations

import pytest

from candor_sidecar.durations import DurationError, format_duration, parse_duration


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("500ms", 0.5), ("3s", 3.0), ("2m", 120.0), ("1h30m", 5400.0), ("1.5s", 1.5), ("250us", 0.00025)],
)
def test_kubernetes_and_haproxy_forms_parse(text: str, seconds: float) -> None:
    assert parse_duration(text, "slowStart") == pytest.approx(seconds)


@pytest.mark.parametrize("bad", ["", "10", "3 s", "-1s", "1x", "s", 10, None, True])
def test_bad_durations_name_the_field(bad: object) -> None:
    with pytest.raises(DurationError) as error:
        parse_duration(bad, "deadlock.heartbeatTimeout")
    assert str(error.value).startswith("deadlock.heartbeatTimeout: ")


def test_range_is_enforced_with_the_limit_in_the_message() -> None:
    with pytest.raises(DurationError, match=r"evaluationInterval: 10ms is below the minimum of 100ms"):
        parse_duration("10ms", "evaluationInterval", minimum=0.1)
    with pytest.raises(DurationError, match="above the maximum of 1h"):
        parse_duration("2h", "slowStart", maximum=3600)


@pytest.mark.parametrize(("seconds", "text"), [(0.5, "500ms"), (3, "3s"), (120, "2m"), (7200, "2h"), (90, "90s")])
def test_format_gives_haproxy_units(seconds: float, text: str) -> None:
    assert format_duration(seconds) == text
    assert parse_duration(text, "x") == pytest.approx(seconds)
