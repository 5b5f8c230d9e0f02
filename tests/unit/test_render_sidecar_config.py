"""render_sidecar_config: the sidecar's own parser accepts it and reads back the policy's values."""

from __future__ import annotations

import pytest

from candor_operator.injection import PolicyTarget, SidecarSettings, inject
from candor_operator.policy import parse_policy
from candor_operator.render import render_sidecar_config
from candor_sidecar.config import parse_config
from candor_tracer.pod_contract import PODINFO_DIR, STATE_DIR
from tests.cases.policy_cases import FULL_SPEC, valid_spec


def test_full_policy_round_trips_through_the_sidecar_parser() -> None:
    rendered = render_sidecar_config(parse_policy(FULL_SPEC))
    config = parse_config(rendered)
    assert (config.state_dir, config.pod_info_dir) == (STATE_DIR, PODINFO_DIR)
    assert (config.http.port, config.agent.port) == (9898, 9999)
    assert config.memory.max_percent == 75
    assert (config.disk.paths, config.disk.max_percent) == (("/data", "/tmp"), 85)
    assert (config.deadlock.heartbeat_timeout, config.deadlock.max_job_duration) == (15.0, 1800.0)
    assert (config.slow_start, config.max_conn, config.final_scrape_timeout) == (60.0, 30, 30.0)
    assert config.evaluation_interval == 0.5  # twice per 1s agent interval


def test_defaults_and_no_connection_limit() -> None:
    rendered = render_sidecar_config(parse_policy(valid_spec()))
    assert "maxConn" not in rendered
    config = parse_config(rendered)
    assert config.max_conn is None and config.evaluation_interval == 1.0 and config.slow_start == 30.0


@pytest.mark.parametrize(("interval", "evaluation"), [("100ms", 0.1), ("300ms", 0.15), ("5s", 1.0)])
def test_evaluation_keeps_up_with_the_agent(interval: str, evaluation: float) -> None:
    policy = parse_policy(valid_spec(agentCheck={"interval": interval}, slowStart="10s"))
    assert parse_config(render_sidecar_config(policy)).evaluation_interval == pytest.approx(evaluation)


def test_ports_follow_the_policy() -> None:
    policy = parse_policy(valid_spec(httpCheck={"port": 8081}, agentCheck={"port": 8082}))
    config = parse_config(render_sidecar_config(policy))
    assert (config.http.port, config.agent.port) == (8081, 8082)


def test_the_folders_the_config_names_are_mounted_into_the_injected_sidecar() -> None:
    rendered = render_sidecar_config(parse_policy(valid_spec()))
    pod = {"metadata": {"namespace": "shop", "name": "web-0"}, "spec": {"containers": [{"name": "app"}]}}
    sidecar = inject(pod, PolicyTarget(policy="web", configmap="candor-sidecar-web"), SidecarSettings())
    mounts = {m["mountPath"] for m in sidecar["spec"]["initContainers"][0]["volumeMounts"]}
    assert {rendered["stateDir"], rendered["podInfoDir"]} <= mounts


def test_the_drain_follows_the_agent_interval_unless_the_policy_bounds_it() -> None:
    config = parse_config(render_sidecar_config(parse_policy(FULL_SPEC)))
    assert (config.drain.agent_interval, config.drain.max_wait) == (1.0, 10.0)
    derived = parse_config(render_sidecar_config(parse_policy(valid_spec(agentCheck={"interval": "3s"}))))
    assert (derived.drain.agent_interval, derived.drain.max_wait) == (3.0, 10.0)  # 3 intervals and a second


def test_render_says_what_termination_does() -> None:
    from candor_operator.render import drain_summary

    assert "at most 7s" in drain_summary(parse_policy(valid_spec()))
    assert drain_summary(parse_policy(valid_spec(drain={"enabled": False}))).startswith("drain.enabled is false")
