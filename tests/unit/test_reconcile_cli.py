"""`candor operator` and `python -m candor_operator`: options and the errors a user sees before anything runs."""

from __future__ import annotations

import subprocess
import sys

from click.testing import CliRunner

from candor_operator.cli import operator_command


def test_the_webhook_needs_a_certificate_and_the_error_says_which_flags() -> None:
    result = CliRunner().invoke(operator_command, ["--standalone"], env={"CANDOR_WEBHOOK_CERT": "",
                                                                         "CANDOR_WEBHOOK_KEY": ""})
    assert result.exit_code == 2
    assert "--webhook-cert and --webhook-key" in result.output and "--no-webhook" in result.output


def test_bad_option_values_are_refused_by_name() -> None:
    result = CliRunner().invoke(operator_command, ["--no-webhook", "--webhook-port", "70000"])
    assert result.exit_code == 2 and "--webhook-port" in result.output
    result = CliRunner().invoke(operator_command, ["--no-webhook", "--resync", "0"])
    assert result.exit_code == 2 and "--resync" in result.output


def test_module_entry_point_is_the_same_command() -> None:
    result = subprocess.run([sys.executable, "-m", "candor_operator", "--help"], capture_output=True, text=True,
                            check=False, timeout=60)
    assert result.returncode == 0
    assert "--sidecar-image" in result.stdout and "--webhook-path" in result.stdout


def test_missing_files_are_named_before_the_operator_starts() -> None:
    result = CliRunner().invoke(operator_command, ["--kubeconfig", "/nonexistent/kubeconfig", "--no-webhook"])
    assert result.exit_code == 2 and "--kubeconfig" in result.output and "does not exist" in result.output
    result = CliRunner().invoke(operator_command, ["--webhook-cert", "/nonexistent/tls.crt", "--webhook-key", "/x"])
    assert result.exit_code == 2 and "--webhook-cert" in result.output
