"""The sidecar config: defaults, the README's example, and a clear exit 2 for every bad key."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from candor_sidecar.config import DrainConfig, SidecarConfig, load_config, parse_config
from candor_sidecar.field_error import FieldError

EXAMPLE = """
stateDir: /var/run/candor
podInfoDir: /etc/podinfo
http: {port: 9898}
agent: {port: 9999}
memory: {maxPercent: 80}
disk: {paths: [/data], maxPercent: 90}
deadlock: {heartbeatTimeout: 30s, maxJobDuration: 10m}
slowStart: 30s
maxConn: 30
evaluationInterval: 1s
finalScrapeTimeout: 20s
"""


def test_the_issue_example_parses_into_typed_values() -> None:
    config = parse_config(yaml.safe_load(EXAMPLE))
    assert config.state_dir == "/var/run/candor"
    assert config.pod_info_dir == "/etc/podinfo"
    assert (config.http.port, config.agent.port) == (9898, 9999)
    assert config.memory.max_percent == 80
    assert config.disk.paths == ("/data",) and config.disk.max_percent == 90
    assert config.deadlock.heartbeat_timeout == 30 and config.deadlock.max_job_duration == 600
    assert config.slow_start == 30 and config.max_conn == 30
    assert config.evaluation_interval == 1 and config.final_scrape_timeout == 20


def test_an_empty_file_gives_the_documented_defaults() -> None:
    assert parse_config(None) == SidecarConfig()
    assert parse_config({}).http.port == 9898


def test_cli_flags_override_the_file() -> None:
    config = parse_config({"http": {"port": 1000}}).with_overrides(state_dir="/tmp/x", http_port=2000, agent_port=3000)
    assert (config.state_dir, config.http.port, config.agent.port) == ("/tmp/x", 2000, 3000)
    config = config.with_overrides(grace_period=45, control_socket="/run/x/sidecar.sock")
    assert (config.grace_period, config.control_socket) == (45.0, "/run/x/sidecar.sock")
    with pytest.raises(FieldError, match="--termination-grace-period"):
        config.with_overrides(grace_period=-1)
    with pytest.raises(FieldError, match="--control-socket"):
        config.with_overrides(control_socket="relative.sock")


def test_the_drain_section_reads_the_poll_interval_and_the_longest_wait() -> None:
    config = parse_config({"drain": {"agentInterval": "500ms", "maxWait": "4s"}})
    assert (config.drain.agent_interval, config.drain.max_wait) == (0.5, 4.0)
    assert parse_config({}).drain == DrainConfig(agent_interval=2.0, max_wait=6.0)


BAD = [
    ({"stateDirectory": "/x"}, "stateDirectory", "unknown key"),
    ({"http": {"prot": 1}}, "http.prot", "unknown key"),
    ({"http": {"port": 0}}, "http.port", "1 to 65535"),
    ({"http": {"port": "80"}}, "http.port", "1 to 65535"),
    ({"http": 80}, "http", "mapping"),
    ({"agent": {"port": 70000}}, "agent.port", "1 to 65535"),
    ({"memory": {"maxPercent": 0}}, "memory.maxPercent", "above 0 and at most 100"),
    ({"memory": {"maxPercent": 120}}, "memory.maxPercent", "above 0 and at most 100"),
    ({"memory": {"max": 80}}, "memory.max", "unknown key"),
    ({"disk": {"paths": "/data"}}, "disk.paths", "list of absolute paths"),
    ({"disk": {"paths": ["data"]}}, "disk.paths[0]", "absolute path"),
    ({"disk": {"maxPercent": True}}, "disk.maxPercent", "percentage"),
    ({"deadlock": {"heartbeatTimeout": "30"}}, "deadlock.heartbeatTimeout", "unit"),
    ({"deadlock": {"heartbeatTimeout": 30}}, "deadlock.heartbeatTimeout", "duration"),
    ({"deadlock": {"maxJobDuration": "1ms"}}, "deadlock.maxJobDuration", "minimum"),
    ({"slowStart": "2h"}, "slowStart", "maximum"),
    ({"maxConn": 0}, "maxConn", "1 to 1000000"),
    ({"maxConn": 2.5}, "maxConn", "1 to 1000000"),
    ({"evaluationInterval": "10ms"}, "evaluationInterval", "minimum of 100ms"),
    ({"finalScrapeTimeout": "soon"}, "finalScrapeTimeout", "duration such as"),
    ({"stateDir": "relative"}, "stateDir", "absolute path"),
    ({"http": {"port": 9000}, "agent": {"port": 9000}}, "agent.port", "differ"),
    ({"drain": {"maxWait": "2h"}}, "drain.maxWait", "maximum"),
    ({"drain": {"agentInterval": "1ms"}}, "drain.agentInterval", "minimum"),
    ({"drain": {"wait": "1s"}}, "drain.wait", "unknown key"),
    (["a", "list"], "(top level)", "mapping"),
]


@pytest.mark.parametrize(("data", "field", "problem"), BAD, ids=[case[1] for case in BAD])
def test_each_bad_value_is_refused_naming_the_key_and_what_is_allowed(data: object, field: str, problem: str) -> None:
    with pytest.raises(FieldError) as raised:
        parse_config(data)
    assert raised.value.field == field
    assert problem in raised.value.problem


def test_unreadable_and_non_yaml_files_are_config_errors(tmp_path: Path) -> None:
    with pytest.raises(FieldError, match="cannot read"):
        load_config(tmp_path / "missing.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("http: {port: [\n")
    with pytest.raises(FieldError, match="not valid YAML"):
        load_config(bad)


@pytest.mark.parametrize(("text", "field"), [
    ("memory: {maxPercent: 101}\n", "memory.maxPercent"),
    ("slowStart: fast\n", "slowStart"),
    ("dsik: {paths: [/]}\n", "dsik"),
])
def test_the_command_exits_2_with_a_message_naming_the_key(tmp_path: Path, text: str, field: str) -> None:
    path = tmp_path / "sidecar.yaml"
    path.write_text(text)
    result = subprocess.run([sys.executable, "-m", "candor_sidecar", "--config", str(path)],
                            capture_output=True, text=True, timeout=60, check=False)
    assert result.returncode == 2, result.stderr
    assert f"invalid config: {field}:" in result.stderr


def test_a_port_flag_out_of_range_exits_2(tmp_path: Path) -> None:
    result = subprocess.run([sys.executable, "-m", "candor_sidecar", "--http-port", "70000"],
                            capture_output=True, text=True, timeout=60, check=False)
    assert result.returncode == 2
    assert "--http-port" in result.stderr
