"""The load factor of the agent's weight: the curve, smoothing, hysteresis, bounds, missing figures, never 0;
the CPU and occupancy figures from heartbeats; what the agent, /health and /metrics say about them."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from candor_sidecar.agent import AgentState
from candor_sidecar.checks import PASS, WARN, Evaluation, cpu_check, weight_check
from candor_sidecar.config import LoadWeightConfig, SidecarConfig, parse_config
from candor_sidecar.field_error import FieldError
from candor_sidecar.load import Figure, LoadMeter, LoadReading, busy_occupancy, cpu_detail, occupancy
from candor_sidecar.load_weight import LoadWeight, load_factor
from candor_sidecar.metrics import SidecarFacts, render_metrics
from candor_tracer.journal.reader import LoadRecord, WriterInfo

CONFIG = LoadWeightConfig(figures=("cpu", "occupancy"), target_percent=70, min_percent=10, step_percent=10)


def cpu(percent: float) -> LoadReading:
    return LoadReading(Figure(percent, "utilisation", f"{percent / 100:.2f} of 1 cores (limit) used"), None)


def busy(percent: float) -> LoadReading:
    return LoadReading(None, Figure(percent, "occupancy", "busy"))


NOTHING = LoadReading(None, None)


def settle(weight: LoadWeight, reading: LoadReading, start: float, seconds: float = 30.0, step: float = 0.5) -> float:
    """Feed the same reading every `step` s for `seconds`; returns the time reached."""
    now = start
    while now < start + seconds:
        now += step
        weight.update(reading, now)
    return now


def serve(weight: LoadWeight, full_load: float, start: float, seconds: float = 30.0, step: float = 0.5,
          figure: Callable[[float], LoadReading] = lambda load: cpu(load)) -> float:
    """A pod whose load follows its weight, as behind HAProxy: `full_load` at full weight, and the factor's share
    of it otherwise. Evaluated every `step` s for `seconds`; returns the time reached."""
    now = start
    while now < start + seconds:
        now += step
        weight.update(figure(full_load * weight.decision.factor / 100), now)
    return now


@pytest.mark.parametrize(("load", "factor"), [(0, 100), (50, 100), (70, 100), (85, 55), (100, 10), (250, 10),
                                              (77.5, 77.5)])
def test_full_up_to_the_target_then_linear_to_the_minimum_at_saturation(load: float, factor: float) -> None:
    assert load_factor(load, 70, 10) == pytest.approx(factor)


def test_a_steady_load_settles_on_its_factor_and_names_the_figure() -> None:
    weight = LoadWeight(CONFIG, time_constant=1.0)
    serve(weight, 85, 0.0)  # 85 % at full weight: the factor that load asks for, whatever the weight made of it
    decision = weight.decision
    assert decision.factor == 55 and decision.figure == "cpu"
    assert decision.reason == "cpu 85% > 70%"
    assert decision.loads["cpu"] == pytest.approx(85 * 0.55, abs=0.5)  # what the pod measures at 55 %
    assert "0.47 of 1 cores" in decision.detail and "the load at full weight" in decision.detail


def test_the_weight_judges_the_load_at_full_weight_so_it_does_not_swing_back() -> None:
    """At 10 % of its share a starved pod measures little load; judged on that it would go back to full
    weight, get starved again, and so on. Judged on its load at full weight it stays down."""
    weight = LoadWeight(CONFIG, time_constant=1.0)
    now = serve(weight, 150, 0.0)
    assert weight.decision.factor == 10 and weight.decision.loads["cpu"] == pytest.approx(15, abs=0.5)
    changes = weight.decision.changes
    serve(weight, 150, now, seconds=300)
    assert weight.decision.factor == 10 and weight.decision.changes == changes


def test_smoothing_one_time_constant_feels_about_two_thirds_of_a_step() -> None:
    weight = LoadWeight(LoadWeightConfig(figures=("cpu",), target_percent=1, min_percent=1, step_percent=1), 2.0)
    weight.update(cpu(0), 0.0)
    weight.update(cpu(100), 2.0)  # one time constant later
    assert weight.decision.loads["cpu"] == pytest.approx(63.2, abs=0.1)
    weight.update(cpu(100), 6.0)  # three
    assert weight.decision.loads["cpu"] == pytest.approx(95.0, abs=0.1)


def test_one_busy_sample_does_not_move_the_weight() -> None:
    weight = LoadWeight(CONFIG, time_constant=2.0)
    now = serve(weight, 20, 0.0)
    weight.update(cpu(100), now + 0.5)  # a spike of one evaluation: smoothed to about 39 %
    assert weight.decision.factor == 100


def test_hysteresis_small_moves_are_held_a_full_step_moves() -> None:
    weight = LoadWeight(CONFIG, time_constant=0.5)
    now = serve(weight, 85, 0.0)  # factor 55
    changes = weight.decision.changes
    now = serve(weight, 88, now)  # wants 46: 9 points, less than a step
    assert weight.decision.factor == 55 and weight.decision.changes == changes
    now = serve(weight, 82, now)  # wants 64: 9 points the other way
    assert weight.decision.factor == 55
    serve(weight, 90, now)  # wants 40: a step away, so it moves, once, to within a step of it
    assert 40 <= weight.decision.factor <= 45 and weight.decision.changes == changes + 1


def test_the_bounds_are_reached_even_by_less_than_a_step() -> None:
    weight = LoadWeight(CONFIG, time_constant=0.1)  # evaluations 5 s apart: no smoothing to speak of
    now = serve(weight, 73, 0.0, step=5.0)  # wants 91: 9 points below full, held at full
    assert weight.decision.factor == 100
    now = serve(weight, 98, now, step=5.0)  # wants 16
    assert weight.decision.factor == 16
    now = serve(weight, 100, now, step=5.0)  # wants 10, the minimum: 6 points, moved anyway
    assert weight.decision.factor == 10
    now = serve(weight, 77, now, step=5.0)  # wants 79
    assert weight.decision.factor == 79
    now = serve(weight, 72, now, step=5.0)  # wants 94: 15 points up
    assert weight.decision.factor == 94
    serve(weight, 50, now, step=5.0)  # back within target: full weight from 6 points below, nothing named
    assert weight.decision.factor == 100 and weight.decision.figure is None and weight.decision.reason == ""


def test_missing_figures_change_nothing() -> None:
    weight = LoadWeight(CONFIG, time_constant=0.5)
    assert weight.update(NOTHING, 1.0).factor == 100  # nothing ever measured: full
    now = serve(weight, 100, 1.0)
    lowered = weight.decision
    assert lowered.factor == 10
    settle(weight, NOTHING, now, seconds=600)  # the figures stop coming: the weight stays where it was
    assert weight.decision == lowered


def test_the_highest_figure_decides_and_only_the_figures_asked_for_count() -> None:
    both = LoadWeight(CONFIG, time_constant=0.5)
    serve(both, 100, 0.0, figure=lambda load: LoadReading(cpu(load * 0.4).cpu, busy(load).occupancy))
    assert (both.decision.factor, both.decision.figure) == (10, "occupancy")
    only_cpu = LoadWeight(LoadWeightConfig(figures=("cpu",)), time_constant=0.5)
    settle(only_cpu, LoadReading(cpu(40).cpu, busy(100).occupancy), 0.0)
    assert only_cpu.decision.factor == 100 and set(only_cpu.decision.loads) == {"cpu"}


def test_never_zero_from_load_alone() -> None:
    weight = LoadWeight(LoadWeightConfig(min_percent=1, step_percent=1), time_constant=0.5)
    serve(weight, 10_000, 0.0)
    assert weight.decision.factor == 1
    agent = AgentState(slow_start=30.0, max_conn=None, clock=lambda: 0.0)  # the ramp at its very start: 1 %
    agent.set_load(weight.decision.factor, weight.decision.figure, weight.decision.reason)
    assert agent.weight_percent() == 1
    assert agent.line().startswith(b"up 1% # cpu")
    agent.set_load(0, "cpu", "x")  # even told 0, the agent keeps a weight
    assert agent.weight_percent() == 1


def test_the_agent_answers_ramp_times_load_with_the_reason() -> None:
    now = [100.0]
    agent = AgentState(slow_start=10.0, max_conn=30, clock=lambda: now[0])
    now[0] += 5.0  # half way up the ramp
    agent.set_load(60, "occupancy", "occupancy 82% > 70%")
    assert agent.line() == b"up 30% maxconn:30 # occupancy 82% > 70%\n"
    assert agent.weight_reason() == "occupancy"
    agent.set_load(100, None, "")
    assert agent.line() == b"up 50% maxconn:30\n" and agent.weight_reason() == "slowStart"
    now[0] += 10.0
    assert agent.line() == b"up 100% maxconn:30\n" and agent.weight_reason() == "full"
    agent.update(True, "memory 91% > 80%", False)
    agent.set_load(40, "cpu", "cpu 88% > 70%")
    assert agent.line() == b"down # memory 91% > 80%\n"  # down says why it is down, not the load


def record(at: float, usage_s: float, *, periods: int | None = None, throttled: int | None = None,
           quota: float | None = None, pressure: float | None = None, group: int = 7,
           capacity: int | None = None) -> LoadRecord:
    return LoadRecord(seq=1, read_at=at, cpu_usage_ns=int(usage_s * 1e9), cpu_periods=periods,
                      cpu_throttled_periods=throttled, cpu_quota_cores=quota, cpu_pressure_some=pressure,
                      online_cores=4, cgroup=group, capacity=capacity)


def test_cpu_is_the_highest_of_utilisation_throttling_and_pressure() -> None:
    limited = cpu_detail(record(10.0, 1.0, periods=100, throttled=10, quota=0.5),
                         record(12.0, 1.8, periods=120, throttled=18, quota=0.5))
    assert limited is not None
    assert limited.utilisation == pytest.approx(80.0) and limited.throttled == pytest.approx(40.0)
    figure = limited.figure()
    assert figure is not None and figure.source == "utilisation" and figure.percent == pytest.approx(80.0)
    assert "0.40 of 0.5 cores (limit) used" in figure.detail
    squeezed = cpu_detail(record(10.0, 1.0, pressure=5.0), record(11.0, 1.4, pressure=65.0))
    assert squeezed is not None and squeezed.utilisation == pytest.approx(10.0)  # 0.4 of 4 CPUs
    figure = squeezed.figure()
    assert figure is not None and (figure.source, figure.percent) == ("pressure", 65.0)


def test_counters_that_cannot_be_compared_give_no_cpu_figure() -> None:
    assert cpu_detail(record(10.0, 5.0), record(11.0, 1.0)) is None or \
        cpu_detail(record(10.0, 5.0), record(11.0, 1.0)).figure() is None  # type: ignore[union-attr]
    assert cpu_detail(record(10.0, 1.0, group=1), record(11.0, 2.0, group=2)) is None  # another container
    assert cpu_detail(record(10.0, 1.0), record(10.0, 2.0)) is None  # the same beat


def writer(pid: int, inflight: int, load: LoadRecord | None, busy: float | None = None,
           created: float = 0.0) -> WriterInfo:
    return WriterInfo(journal=f"/j{pid}", pid=pid, heartbeat=1.0, memory_current=None, memory_max=None,
                      inactive_file=None, inflight=inflight, oldest_inflight_start=None, last_stall_at=None,
                      last_stall_seconds=None, load=load, created_at=created, busy_seconds=busy)


def test_averaged_occupancy_counts_requests_shorter_than_an_evaluation() -> None:
    declared = record(0.0, 0, capacity=2)
    # Between two evaluations 1 s apart, two workers finished many short requests: 1.5 s of work in all,
    # while at each evaluation instant nothing happened to be in flight.
    before = {"/j1": 10.0, "/j2": 4.0}
    now = [writer(1, 0, declared, busy=10.9), writer(2, 0, record(0.0, 0, capacity=0), busy=4.6)]
    figure = busy_occupancy(now, before, 100.0, 101.0)
    assert figure is not None and figure.percent == pytest.approx(75.0)
    assert occupancy(now) is not None and occupancy(now).percent == 0.0  # type: ignore[union-attr]
    # A process started within the interval adds all its seconds; one from before, unseen, adds nothing.
    fresh = [writer(1, 0, declared, busy=10.5), writer(3, 0, None, busy=0.5, created=100.5),
             writer(4, 0, None, busy=99.0, created=50.0)]
    figure = busy_occupancy(fresh, before, 100.0, 101.0)
    assert figure is not None and figure.percent == pytest.approx(50.0)
    # Nested traces can add more seconds than there are workers: never above every worker busy.
    figure = busy_occupancy([writer(1, 0, declared, busy=20.0)], before, 100.0, 101.0)
    assert figure is not None and figure.percent == 100.0


def test_the_meter_averages_occupancy_from_its_second_reading_on() -> None:
    meter = LoadMeter()
    declared = record(0.0, 0, capacity=1)
    assert meter.read([writer(1, 1, declared, busy=5.0)], now=10.0).occupancy is None  # no baseline
    reading = meter.read([writer(1, 0, declared, busy=5.25)], now=10.5)
    assert reading.occupancy is not None and reading.occupancy.percent == pytest.approx(50.0)


def test_occupancy_pools_the_declared_capacity() -> None:
    assert occupancy([writer(1, 3, None)]) is None  # nobody declared a capacity
    workers = [writer(1, 1, record(1.0, 0, capacity=1)), writer(2, 0, record(1.0, 0, capacity=1)),
               writer(3, 0, None)]  # the gunicorn arbiter: no capacity, no traces
    figure = occupancy(workers)
    assert figure is not None and figure.percent == 50.0 and figure.detail == "1 of 2 workers busy"
    # An RQ worker declares 1; its horse (another process, nothing declared) runs the job.
    figure = occupancy([writer(1, 0, record(1.0, 0, capacity=1)), writer(2, 1, record(1.0, 0))])
    assert figure is not None and figure.percent == 100.0
    figure = occupancy([writer(1, 5, record(1.0, 0, capacity=2))])  # nested traces never exceed the capacity
    assert figure is not None and figure.percent == 100.0


def test_the_meter_compares_each_containers_readings_across_evaluations() -> None:
    meter = LoadMeter()
    first = meter.read([writer(1, 0, record(10.0, 1.0, quota=1.0))])
    assert first.cpu is None and meter.has_cpu  # one reading: no rate yet
    second = meter.read([writer(1, 0, record(11.0, 1.5, quota=1.0)), writer(2, 0, record(10.5, 1.2, quota=1.0))])
    assert second.cpu is not None and second.cpu.percent == pytest.approx(50.0)  # the freshest beat counts
    assert meter.read([writer(1, 0, record(11.0, 1.5, quota=1.0))]).cpu is None  # no new beat: no figure
    assert meter.read([writer(1, 0, None)]).cpu is None and not meter.has_cpu  # an older tracer


def test_the_cpu_check_warns_from_its_threshold_and_never_fails() -> None:
    config = SidecarConfig()
    meter = LoadMeter()
    assert cpu_check(config, meter) == []  # no CPU counters in any journal: nothing to say
    meter.read([writer(1, 0, record(0.0, 0.0, quota=1.0))])
    (measuring,) = cpu_check(config, meter)
    assert measuring.status == PASS and "measuring" in measuring.output
    usage = 0.0
    for second in range(1, 60):
        usage += 1.0  # a whole core of a one-core quota, every second
        meter.read([writer(1, 0, record(float(second), usage, quota=1.0))])
    (busy_check,) = cpu_check(config, meter)
    assert busy_check.status == WARN and busy_check.key == "cpu:utilization"
    assert busy_check.reason == "cpu 100% >= 90%" and busy_check.observed_value == pytest.approx(100.0)


def test_verbose_health_and_metrics_say_what_lowered_the_weight() -> None:
    weight = LoadWeight(CONFIG, time_constant=0.5)
    serve(weight, 100, 0.0, figure=busy)
    (entry,) = weight_check(weight.decision)
    assert entry.key == "agent:weight" and entry.status == PASS and entry.observed_value == 10.0
    assert "occupancy saturated" in entry.output
    evaluation = Evaluation((entry,), 0.0, 0.0, False, None, weight.decision)
    facts = SidecarFacts(evaluation, 10, "up", False, 0, weight_reason="occupancy")
    body, _ = render_metrics(None, facts, "")
    text = body.decode()
    assert 'candor_agent_weight_percent{reason="occupancy"} 10' in text
    assert 'candor_load_percent{figure="occupancy"} 10' in text  # measured: 10 % of the share, all busy
    assert "candor_load_factor_percent 10" in text
    assert "candor_load_weight_changes_total 1" in text


def test_the_sidecar_config_reads_load_weights_off_by_default() -> None:
    assert parse_config({}).load_weight is None
    config = parse_config({"loadWeight": {"from": ["occupancy"], "targetPercent": 60}, "cpu": {"warnPercent": 75}})
    assert config.load_weight == LoadWeightConfig(figures=("occupancy",), target_percent=60.0)
    assert config.cpu.warn_percent == 75.0
    for bad, key in (({"from": []}, "loadWeight.from"), ({"from": ["disk"]}, "loadWeight.from"),
                     ({"targetPercent": 100}, "loadWeight.targetPercent"), ({"minPercent": 0}, "loadWeight.minPercent"),
                     ({"speed": 1}, "loadWeight.speed")):
        with pytest.raises(FieldError) as error:
            parse_config({"loadWeight": bad})
        assert error.value.field == key
