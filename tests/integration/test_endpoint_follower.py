"""The controller emulation against a real HAProxy: each controller's runtime-API commands, as their sources
send them, for EndpointSlices given by hand (no cluster needed)."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest

from candor_demo.haproxy_process import HAProxyProcess
from candor_operator.policy import parse_policy
from candor_operator.render import render_backend
from harness.processes.endpoint_follower import (
    HAPROXY_INGRESS,
    HAPROXYTECH,
    EndpointSliceFollower,
    declare_slots,
    wanted_endpoints,
)
from tests.cases.policy_cases import valid_spec

pytestmark = pytest.mark.integration


@dataclass
class _Answer:
    body: dict[str, Any]

    def ok(self) -> dict[str, Any]:
        return self.body


class _Slices:
    """Stands in for the cluster: `api()` answers the EndpointSlice list the test sets."""

    def __init__(self) -> None:
        self.endpoints: list[dict[str, Any]] = []

    def api(self, method: str, path: str, params: dict[str, str] | None = None) -> _Answer:
        return _Answer({"items": [{"ports": [{"name": "http", "port": 8080}], "endpoints": self.endpoints}]})


def _endpoint(address: str, ready: bool = True, terminating: bool = False) -> dict[str, Any]:
    return {"addresses": [address], "conditions": {"ready": ready, "serving": True, "terminating": terminating}}


def _servers(haproxy: HAProxyProcess) -> dict[str, dict[str, str]]:
    """`show servers state`: server name -> column -> value."""
    lines = haproxy.command("show servers state candor").splitlines()
    header = next(line for line in lines if line.startswith("#")).lstrip("# ").split()
    rows = [dict(zip(header, line.split(), strict=False)) for line in lines[1:] if line and not line.startswith("#")]
    return {row["srv_name"]: row for row in rows}


def _admin(slot: dict[str, str]) -> str:
    """srv_admin_state as a word: its FMAINT (0x1) and FDRAIN (0x8) bits (0x4 only records `disabled` in the
    config: a slot set ready keeps it)."""
    flags = int(slot["srv_admin_state"])
    return "maint" if flags & 0x1 else "drain" if flags & 0x8 else "ready"


@pytest.fixture(params=[HAPROXYTECH, HAPROXY_INGRESS])
def rig(request: pytest.FixtureRequest) -> Iterator[tuple[str, HAProxyProcess, _Slices, EndpointSliceFollower]]:
    controller: str = request.param
    backend = declare_slots(render_backend(parse_policy(valid_spec()), name="candor", controller=controller), 3)
    config = "global\n    maxconn 100\ndefaults\n    mode http\n    timeout connect 1s\n" \
             "    timeout client 5s\n    timeout server 5s\n" + backend
    slices = _Slices()
    with HAProxyProcess(config) as haproxy:
        follower = EndpointSliceFollower(slices, haproxy, "ns", "svc", "candor", 3, controller=controller)
        yield controller, haproxy, slices, follower


def test_a_ready_endpoint_fills_a_slot_and_a_leaving_one_empties_it_as_the_controller_does(
        rig: tuple[str, HAProxyProcess, _Slices, EndpointSliceFollower]) -> None:
    controller, haproxy, slices, follower = rig
    slices.endpoints = [_endpoint("127.0.0.5")]
    follower.apply(follower._read())
    slot = _servers(haproxy)["SRV_1"]
    assert (slot["srv_addr"], slot["srv_port"], _admin(slot)) == ("127.0.0.5", "8080", "ready")
    if controller == HAPROXY_INGRESS:
        assert slot["srv_uweight"] == "100"

    slices.endpoints = [_endpoint("127.0.0.5", ready=False, terminating=True)]
    follower.apply(follower._read())
    slot = _servers(haproxy)["SRV_1"]
    if controller == HAPROXYTECH:
        # Dropped at once and re-addressed: HAProxy's checks and agent polls leave the pod.
        assert (slot["srv_addr"], slot["srv_port"], _admin(slot)) == ("127.0.0.1", "1", "maint")
    else:
        # drain-support: kept at its address with weight 0: still polled, no new requests.
        assert (slot["srv_addr"], slot["srv_uweight"], _admin(slot)) == ("127.0.0.5", "0", "drain")
        slices.endpoints = []
        follower.apply(follower._read())
        slot = _servers(haproxy)["SRV_1"]
        assert (slot["srv_addr"], _admin(slot)) == ("127.0.0.5", "maint")  # disabled in place
    assert [event.action for event in follower.events][-1] == "maint"
    assert follower.errors == []


def test_which_endpoints_each_controller_keeps() -> None:
    slices = [{"ports": [{"name": "http", "port": 8080}],
               "endpoints": [_endpoint("10.0.0.1"), _endpoint("10.0.0.2", ready=False),
                             _endpoint("10.0.0.3", ready=False, terminating=True)]}]
    assert set(wanted_endpoints(slices, HAPROXYTECH)) == {"10.0.0.1"}
    kept = wanted_endpoints(slices, HAPROXY_INGRESS)
    assert set(kept) == {"10.0.0.1", "10.0.0.3"} and kept["10.0.0.3"].terminating
    assert set(wanted_endpoints(slices, HAPROXY_INGRESS, drain_support=False)) == {"10.0.0.1"}


@pytest.mark.parametrize("controller", [HAPROXYTECH, HAPROXY_INGRESS])
def test_the_drain_rig_config_and_objects_hold_for_every_cell(controller: str, tmp_path: Any) -> None:
    """What bench/drain.py and the node tests run, checked without the node: HAProxy accepts the rig's
    config, and its HealthPolicy governs exactly the injected cells."""
    from candor_demo.haproxy_process import check_config
    from candor_operator.labels import selector_matches
    from harness.processes.drain_rig import CELLS, haproxy_config, objects

    result = check_config(haproxy_config({name: 20000 + i for i, name in enumerate(CELLS)}, controller))
    assert result.returncode == 0, result.stdout + result.stderr
    assert check_config(haproxy_config({"plain": 20010}, controller)).returncode == 0
    made = objects("ns", tmp_path, cells=list(CELLS), controller=controller)
    [policy] = [o for o in made if o["kind"] == "HealthPolicy"]
    parse_policy(policy["spec"])
    for deployment in (o for o in made if o["kind"] == "Deployment"):
        name = deployment["metadata"]["name"]
        cell = CELLS[name]
        labels = deployment["spec"]["template"]["metadata"]["labels"]
        assert selector_matches(policy["spec"]["selector"], labels) == cell.inject, name
        [app] = deployment["spec"]["template"]["spec"]["containers"]
        assert ("readinessProbe" in app) == cell.probe, name
        assert app.get("lifecycle", {}).get("preStop", {}).get("sleep", {}).get("seconds", 0) == cell.sleep, name


def test_a_filled_slot_is_up_before_any_check_as_the_controllers_see_it(
        rig: tuple[str, HAProxyProcess, _Slices, EndpointSliceFollower]) -> None:
    """What the emulation relies on HAProxy for: a slot set `ready` through the runtime API takes requests at
    once (UP, its checks still INI), whatever the pod behind it does; its checks come one interval later."""
    _controller, haproxy, slices, follower = rig
    slices.endpoints = [_endpoint("127.0.0.5")]
    follower.apply(follower._read())
    state = haproxy.server_state("candor", "SRV_1")
    assert state.base_status == "UP" and state.check_status == "INI", state
