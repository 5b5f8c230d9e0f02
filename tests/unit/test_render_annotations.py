"""render_annotations / render_backend: documented keys and HAProxy value forms for both controllers."""

from __future__ import annotations

import pytest

from candor_operator.policy import parse_policy
from candor_operator.render import (
    CONTROLLER_ANNOTATIONS,
    POD_MAXCONN_NOTE,
    Server,
    controller_notes,
    render_annotations,
    render_backend,
)
from tests.cases.policy_cases import FULL_SPEC, valid_spec

TECH = "haproxy.org/"
HI = "haproxy-ingress.github.io/"


def _snippet_words(text: str, directive: str) -> list[str]:
    lines = [line.split() for line in text.splitlines() if line.startswith(directive)]
    assert len(lines) == 1, f"expected one {directive!r} line in {text!r}"
    return lines[0]


def _option(words: list[str], keyword: str) -> str:
    return words[words.index(keyword) + 1]


def test_haproxytech_defaults() -> None:
    annotations = render_annotations(parse_policy(valid_spec()))
    assert set(annotations) == {TECH + k for k in (
        "check", "check-http", "check-interval", "timeout-check", "backend-config-snippet")}
    assert annotations[TECH + "check"] == "true"
    assert annotations[TECH + "check-http"] == "GET /health"
    assert annotations[TECH + "check-interval"] == "2s"
    assert annotations[TECH + "timeout-check"] == "2s"
    snippet = annotations[TECH + "backend-config-snippet"]
    assert "http-check expect status 200" in snippet.splitlines()
    assert "option redispatch 1" in snippet.splitlines()  # a refused connection goes to another pod at once
    # A server connection closed unanswered is retried elsewhere, but only for idempotent methods.
    assert "retry-on conn-failure empty-response" in snippet.splitlines()
    assert "http-request disable-l7-retry unless { method GET HEAD OPTIONS PUT DELETE TRACE }" in snippet.splitlines()
    words = _snippet_words(snippet, "default-server")
    assert (_option(words, "port"), _option(words, "rise"), _option(words, "fall")) == ("9898", "2", "3")
    assert "agent-check" in words
    assert (_option(words, "agent-port"), _option(words, "agent-inter")) == ("9999", "2s")
    assert _option(words, "weight") == "100"
    assert "slowstart" not in words  # the agent's ramp is the only one
    assert "observe" not in words and "timeout queue" not in snippet


def test_haproxytech_full_policy() -> None:
    annotations = render_annotations(parse_policy(FULL_SPEC), "haproxytech")
    assert annotations[TECH + "check-interval"] == "1s"
    assert annotations[TECH + "timeout-check"] == "500ms"
    assert annotations[TECH + "pod-maxconn"] == "30"
    snippet = annotations[TECH + "backend-config-snippet"]
    # timeout-queue is a ConfigMap-only key for haproxytech, so it travels in the snippet.
    assert "timeout queue 5s" in snippet.splitlines()
    words = _snippet_words(snippet, "default-server")
    assert "slowstart" not in words and _option(words, "observe") == "layer7"
    assert (_option(words, "error-limit"), _option(words, "on-error")) == ("10", "mark-down")


def test_haproxy_ingress_defaults() -> None:
    annotations = render_annotations(parse_policy(valid_spec(ingress={"controller": "haproxy-ingress"})))
    assert annotations == {
        HI + "health-check-uri": "GET /health",
        HI + "health-check-port": "9898",
        HI + "health-check-interval": "2s",
        HI + "health-check-rise-count": "2",
        HI + "health-check-fall-count": "3",
        HI + "agent-check-port": "9999",
        HI + "agent-check-interval": "2s",
        HI + "initial-weight": "100",
        HI + "config-backend": "http-check expect status 200\ntimeout check 2s\noption redispatch 1\n"
                               "retries 3\nretry-on conn-failure empty-response\n"
                               "http-request disable-l7-retry unless { method GET HEAD OPTIONS PUT DELETE TRACE }\n",
    }


def test_haproxy_ingress_full_policy() -> None:
    annotations = render_annotations(parse_policy(FULL_SPEC))
    assert annotations[HI + "maxconn-server"] == "30"
    assert annotations[HI + "timeout-queue"] == "5s"
    assert annotations[HI + "health-check-interval"] == "1s"
    lines = annotations[HI + "config-backend"].splitlines()
    assert "timeout check 500ms" in lines
    assert lines[-1] == "default-server observe layer7 error-limit 10 on-error mark-down"


@pytest.mark.parametrize("controller", ["haproxytech", "haproxy-ingress"])
@pytest.mark.parametrize("spec", [valid_spec(), FULL_SPEC, valid_spec(slowStart="0s", maxConn=5)])
def test_only_managed_keys_and_string_values(controller: str, spec: dict[str, object]) -> None:
    annotations = render_annotations(parse_policy(spec), controller)
    assert set(annotations) <= set(CONTROLLER_ANNOTATIONS[controller])
    assert all(isinstance(value, str) and value for value in annotations.values())


def test_a_removed_setting_disappears_from_the_render() -> None:
    with_limit = render_annotations(parse_policy(valid_spec(maxConn=30, queueTimeout="2s")), "haproxy-ingress")
    without = render_annotations(parse_policy(valid_spec()), "haproxy-ingress")
    assert {HI + "maxconn-server", HI + "timeout-queue"} <= set(with_limit)
    assert not {HI + "maxconn-server", HI + "timeout-queue"} & set(without)


def test_a_policy_without_passive_checks_writes_no_default_server_line() -> None:
    annotations = render_annotations(parse_policy(valid_spec()), "haproxy-ingress")
    assert "default-server" not in annotations[HI + "config-backend"]


def test_controller_argument_overrides_the_policy() -> None:
    policy = parse_policy(valid_spec(ingress={"controller": "haproxy-ingress"}))
    assert all(key.startswith(TECH) for key in render_annotations(policy, "haproxytech"))


def test_unknown_controller_is_refused() -> None:
    with pytest.raises(ValueError, match="controller"):
        render_annotations(parse_policy(valid_spec()), "nginx")


def test_backend_section_for_haproxytech() -> None:
    text = render_backend(parse_policy(FULL_SPEC), [Server("pod-a", "10.0.0.1:8080"), Server("pod-b", "10.0.0.2:8080")],
                          name="shop_demo", controller="haproxytech")
    lines = text.splitlines()
    assert lines[0] == "backend shop_demo"
    assert "    option httpchk GET /health" in lines
    assert "    timeout queue 5s" in lines and "    timeout check 500ms" in lines
    words = _snippet_words("\n".join(line.strip() for line in lines), "default-server")
    assert "check" in words and "agent-check" in words
    assert (_option(words, "inter"), _option(words, "maxconn"), _option(words, "weight")) == ("1s", "30", "100")
    assert lines[-2:] == ["    server pod-a 10.0.0.1:8080", "    server pod-b 10.0.0.2:8080"]


def test_both_controllers_check_with_get() -> None:
    # haproxy-ingress pastes health-check-uri after `option httpchk`; a bare URI would mean OPTIONS.
    policy = parse_policy(valid_spec())
    for controller in ("haproxytech", "haproxy-ingress"):
        assert "    option httpchk GET /health" in render_backend(policy, controller=controller).splitlines()


def test_server_port_overrides_for_one_host() -> None:
    text = render_backend(parse_policy(valid_spec()), [Server("a", "127.0.0.1:8001", check_port=9001, agent_port=9002)])
    assert text.splitlines()[-1] == "    server a 127.0.0.1:8001 port 9001 agent-port 9002"


def test_the_preview_backend_balances_as_each_controller_does_and_never_ramps_twice() -> None:
    policy = parse_policy(FULL_SPEC)
    assert "    balance random(2)\n" in render_backend(policy, controller="haproxy-ingress")
    assert "    balance roundrobin\n" in render_backend(policy, controller="haproxytech")
    assert all("slowstart" not in render_backend(policy, controller=c) for c in ("haproxy-ingress", "haproxytech"))


def test_haproxytech_pod_maxconn_is_explained_as_divided_among_controller_pods() -> None:
    policy = parse_policy(FULL_SPEC)
    assert controller_notes(policy, "haproxytech") == [POD_MAXCONN_NOTE]
    assert controller_notes(policy, "haproxy-ingress") == []
    assert controller_notes(parse_policy(valid_spec()), "haproxytech") == []  # no maxConn, nothing divided
