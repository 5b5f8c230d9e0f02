"""The `app:serving` check: the app's serving ports, connected to for real on 127.0.0.1."""

from __future__ import annotations

import socket
from collections.abc import Iterator

import pytest

from candor_sidecar.cli import build_config
from candor_sidecar.field_error import FieldError
from candor_sidecar.serving import KEY, pod_addresses, serving_checks


@pytest.fixture
def listener() -> Iterator[socket.socket]:
    with socket.create_server(("127.0.0.1", 0)) as server:
        yield server


def _closed_port() -> int:
    """A port bound by nobody's listener: connecting to it is refused."""
    with socket.socket() as bound:
        bound.bind(("127.0.0.1", 0))
        port: int = bound.getsockname()[1]
    return port


def test_a_listening_port_passes_and_a_closed_one_fails(listener: socket.socket) -> None:
    open_port, closed_port = listener.getsockname()[1], _closed_port()
    passing, failing = serving_checks([open_port, closed_port], ["127.0.0.1"])
    assert (passing.key, passing.status, passing.component_id) == (KEY, "pass", str(open_port))
    assert (failing.key, failing.status, failing.component_id) == (KEY, "fail", str(closed_port))
    assert failing.reason == f"app port {closed_port} refuses connections"
    assert "refused" in failing.output.lower()


def test_no_port_known_means_no_check() -> None:
    assert serving_checks([]) == []


def test_an_app_bound_to_the_pod_address_only_is_found_there(listener: socket.socket,
                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    # 127.0.0.2 stands for the pod's IP: the app listens there, not on 127.0.0.1.
    with socket.create_server(("127.0.0.2", 0)) as pod_only:
        port = pod_only.getsockname()[1]
        monkeypatch.setenv("POD_IP", "127.0.0.2")
        assert pod_addresses() == ("127.0.0.1", "127.0.0.2")
        [result] = serving_checks([port])
        assert result.status == "pass" and result.output.startswith("127.0.0.2:")
        monkeypatch.delenv("POD_IP")
        [result] = serving_checks([port])
        assert result.status == "fail"


def test_app_ports_come_from_the_command_line_deduplicated_and_checked() -> None:
    assert build_config(None, None, None, None, app_ports=[8080, 8443, 8080]).app_ports == (8080, 8443)
    assert build_config(None, None, None, None).app_ports == ()
    with pytest.raises(FieldError) as error:
        build_config(None, None, None, None, app_ports=[0])
    assert error.value.field == "--app-port"
