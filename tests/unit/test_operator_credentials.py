"""Where the operator's credentials come from: read afresh each time, and logins paced after refusals."""

from __future__ import annotations

from pathlib import Path

import kopf
import pytest
import yaml

from candor_operator.credentials import LoginPacer, connection_info, fingerprint


def write_kubeconfig(path: Path, user: dict[str, str], context_user: str = "me") -> Path:
    path.write_text(yaml.safe_dump({
        "apiVersion": "v1", "kind": "Config", "current-context": "here",
        "clusters": [{"name": "c", "cluster": {"server": "https://127.0.0.1:6443"}}],
        "users": [{"name": "me", "user": user}],
        "contexts": [{"name": "here", "context": {"cluster": "c", "user": context_user}}],
    }))
    return path


def test_a_token_file_is_read_again_at_each_login(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("KUBECONFIG", raising=False)
    (tmp_path / "secrets").mkdir()
    token = tmp_path / "secrets" / "token"
    token.write_text("first\n")
    kubeconfig = write_kubeconfig(tmp_path / "config", {"tokenFile": "secrets/token"})  # relative to the file
    assert connection_info(str(kubeconfig)).token == "first"
    token.write_text("second")
    assert connection_info(str(kubeconfig)).token == "second"


def test_an_inline_token_wins_and_a_rewritten_kubeconfig_is_read_again(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("KUBECONFIG", raising=False)
    kubeconfig = write_kubeconfig(tmp_path / "config", {"token": "inline", "tokenFile": "/nonexistent"})
    assert connection_info(str(kubeconfig)).token == "inline"
    write_kubeconfig(kubeconfig, {"token": "renewed"})
    assert connection_info(str(kubeconfig)).token == "renewed"


@pytest.mark.parametrize(("content", "problem"), [(None, "cannot read it"), ("\n", "the file is empty")])
def test_an_unreadable_token_file_is_a_login_error_naming_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, content: str | None, problem: str
) -> None:
    monkeypatch.delenv("KUBECONFIG", raising=False)
    token = tmp_path / "token"
    if content is not None:
        token.write_text(content)
    kubeconfig = write_kubeconfig(tmp_path / "config", {"tokenFile": str(token)})
    with pytest.raises(kopf.LoginError, match=f"tokenFile {token}: {problem}"):
        connection_info(str(kubeconfig))


def test_a_certificate_renewed_under_the_same_path_changes_the_fingerprint(tmp_path: Path) -> None:
    certificate = tmp_path / "client.crt"
    certificate.write_text("one")
    info = kopf.ConnectionInfo(server="https://127.0.0.1:6443", certificate_path=str(certificate))
    before = fingerprint(info)
    assert fingerprint(info) == before
    certificate.write_text("two")
    assert fingerprint(info) != before


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_logins_in_quick_succession_wait_longer_and_longer_up_to_the_maximum() -> None:
    clock = Clock()
    pacer = LoginPacer(first=0.5, maximum=10.0, settle=60.0, clock=clock)
    waits = []
    for _ in range(8):
        wait = pacer.delay()
        waits.append(wait)
        clock.now += wait + 0.01  # the refused login happens right after the wait
    assert waits == [0.0, 0.5, 1.0, 2.0, 4.0, 8.0, 10.0, 10.0]


def test_a_login_long_after_the_previous_one_does_not_wait() -> None:
    clock = Clock()
    pacer = LoginPacer(first=0.5, maximum=10.0, settle=60.0, clock=clock)
    assert [pacer.delay(), pacer.delay(), pacer.delay()] == [0.0, 0.5, 1.0]
    clock.now += 3600  # an hour later a token expires: the first login of a new streak is immediate
    assert pacer.delay() == 0.0
    assert pacer.streak == 0


@pytest.mark.parametrize(("host", "port", "server"), [
    ("10.0.0.1", "443", "https://10.0.0.1:443"),
    ("fd00::1", "6443", "https://[fd00::1]:6443"),
])
def test_in_a_pod_the_api_server_is_the_address_the_kubelet_puts_in_the_environment(
    monkeypatch: pytest.MonkeyPatch, host: str, port: str, server: str,
) -> None:
    # kopf's service-account login names kubernetes.default.svc, which needs cluster DNS; client-go's
    # in-cluster config (and Candor's) dial KUBERNETES_SERVICE_HOST:PORT instead.
    from candor_operator.credentials import _in_cluster

    monkeypatch.setenv("KUBERNETES_SERVICE_HOST", host)
    monkeypatch.setenv("KUBERNETES_SERVICE_PORT", port)
    info = kopf.ConnectionInfo(server="https://kubernetes.default.svc", token="t")
    assert _in_cluster(info) == kopf.ConnectionInfo(server=server, token="t")
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST")
    assert _in_cluster(info) == info
    assert _in_cluster(None) is None
