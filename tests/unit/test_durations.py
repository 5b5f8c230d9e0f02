from __future__ import annotations

import pytest

from candor_sidecar.durations import format_duration, parse_duration, parse_duration_nanos
from candor_sidecar.field_error import FieldError


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("500ms", 0.5), ("3s", 3.0), ("2m", 120.0), ("1h30m", 5400.0), ("1.5s", 1.5), ("250us", 0.00025)],
)
def test_kubernetes_and_haproxy_forms_parse(text: str, seconds: float) -> None:
    assert parse_duration(text, "slowStart") == pytest.approx(seconds)


@pytest.mark.parametrize("bad", ["", "10", "3 s", "-1s", "1x", "s", 10, None, True])
def test_bad_durations_name_the_field(bad: object) -> None:
    with pytest.raises(FieldError) as error:
        parse_duration(bad, "deadlock.heartbeatTimeout")
    assert str(error.value).startswith("deadlock.heartbeatTimeout: ")


def test_range_is_enforced_with_the_limit_in_the_message() -> None:
    with pytest.raises(FieldError, match=r"evaluationInterval: 10ms is below the minimum of 100ms"):
        parse_duration("10ms", "evaluationInterval", minimum=0.1)
    with pytest.raises(FieldError, match="above the maximum of 1h"):
        parse_duration("2h", "slowStart", maximum=3600)


@pytest.mark.parametrize(("seconds", "text"), [(0.5, "500ms"), (3, "3s"), (120, "2m"), (7200, "2h"), (90, "90s")])
def test_format_gives_haproxy_units(seconds: float, text: str) -> None:
    assert format_duration(seconds) == text
    assert parse_duration(text, "x") == pytest.approx(seconds)


@pytest.mark.parametrize(("text", "nanos"), [
    ("100000us", 100_000_000), ("0.1s", 100_000_000), ("100ms", 100_000_000), ("0.0001ms", 100),
    ("1h30m", 5_400_000_000_000), ("1.5h", 5_400_000_000_000), ("0.000000001s", 1),
    ("2562047h", 2562047 * 3600 * 10**9),
])
def test_durations_are_whole_nanoseconds_without_float_rounding(text: str, nanos: int) -> None:
    assert parse_duration_nanos(text, "x") == nanos


@pytest.mark.parametrize("text", ["100000us", "0.1s", "100ms", "0.1000s"])
def test_a_value_at_the_minimum_is_accepted_in_every_unit(text: str) -> None:
    assert parse_duration(text, "httpCheck.interval", minimum=0.1) == 0.1


@pytest.mark.parametrize("text", ["99999us", "0.0999999s"])
def test_just_below_the_minimum_is_refused(text: str) -> None:
    with pytest.raises(FieldError, match="below the minimum of 100ms"):
        parse_duration(text, "httpCheck.interval", minimum=0.1)


def test_a_fraction_finer_than_a_nanosecond_is_refused_not_rounded() -> None:
    with pytest.raises(FieldError, match="finer than a nanosecond"):
        parse_duration_nanos("0.0000000001s", "slowStart")


def test_a_huge_value_is_refused_with_a_bounded_message() -> None:
    with pytest.raises(FieldError) as raised:
        parse_duration("9" * 100_000 + "s", "slowStart")
    assert len(str(raised.value)) < 200
