"""The demo's HAProxy config and sidecar configs come from the HealthPolicy and are accepted by the real parsers."""

from __future__ import annotations

import pytest

from candor_demo.haproxy_process import check_config
from candor_demo.policy import ServerPorts, haproxy_config, policy_yaml, sidecar_config
from candor_demo.settings import FULL, QUICK
from candor_sidecar.config import parse_config


@pytest.mark.integration  # runs the real `haproxy -c`
def test_the_whole_haproxy_config_passes_haproxy_check() -> None:
    servers = [ServerPorts(f"resizer-{n}", 20000 + n, 21000 + n, 22000 + n) for n in (1, 2, 3)]
    for settings in (FULL, QUICK):
        config = haproxy_config(settings, servers, 23000, 23001)
        checked = check_config(config)
        assert checked.returncode == 0, checked.stdout + checked.stderr + config
        assert "use-service prometheus-exporter" in config
        assert "server resizer-2 127.0.0.1:20002 port 21002 agent-port 22002" in config
        assert "slowstart" not in config  # the agent ramps; HAProxy's slowstart would ramp a second time
        for word in ("agent-check", "observe layer7", "maxconn 30", "timeout queue", "httpchk"):
            assert word in config, word


def test_sidecar_configs_are_valid_and_placed_on_this_host() -> None:
    config = parse_config(sidecar_config(QUICK, "/tmp/state-x", 31001, 31002))
    assert config.state_dir == "/tmp/state-x"
    assert (config.http.port, config.agent.port) == (31001, 31002)
    assert config.http.address == "127.0.0.1" and config.pod_info_dir is None
    assert config.memory.max_percent == 80
    assert config.evaluation_interval == QUICK.evaluation_interval


def test_the_demo_policy_weighs_by_cpu_only_where_each_instance_has_its_own_cgroup() -> None:
    weighted = parse_config(sidecar_config(QUICK, "/tmp/state-x", 31001, 31002))
    assert weighted.load_weight is not None and list(weighted.load_weight.figures) == ["cpu"]
    assert "weight:" in policy_yaml(QUICK) and "weight:" not in policy_yaml(QUICK, load_weights=False)
    plain = parse_config(sidecar_config(QUICK, "/tmp/state-x", 31001, 31002, load_weights=False))
    assert plain.load_weight is None
