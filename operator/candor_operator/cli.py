"""`candor render` (and `candor operator`): the operator's command-line entry points."""

from __future__ import annotations

import re
import sys
from collections.abc import Mapping
from typing import Any

import click
import yaml

from candor_operator.api_names import API_VERSION, KIND
from candor_operator.policy import CONTROLLERS, parse_policy
from candor_operator.render import (
    controller_notes,
    drain_summary,
    render_annotations,
    render_backend,
    render_sidecar_config,
    weight_summary,
)
from candor_sidecar.field_error import FieldError
from candor_sidecar.release import VERSION

_OUTPUTS = ("text", "annotations", "backend", "sidecar")


def _policies(documents: list[Any], source: str) -> list[tuple[str, Mapping[str, Any]]]:
    """(namespace/name, document) of every HealthPolicy in the file; other kinds are skipped."""
    found: list[tuple[str, Mapping[str, Any]]] = []
    for index, document in enumerate(documents):
        if not isinstance(document, Mapping) or document.get("kind") != KIND:
            continue
        where = f"{source} (document {index + 1})"
        if document.get("apiVersion") != API_VERSION:
            raise FieldError(f"{where}: apiVersion", f"must be {API_VERSION}, got {document.get('apiVersion')!r}")
        metadata = document.get("metadata") or {}
        name = str(metadata.get("name", f"policy-{index + 1}")) if isinstance(metadata, Mapping) else "policy"
        namespace = str(metadata.get("namespace", "default")) if isinstance(metadata, Mapping) else "default"
        found.append((f"{namespace}/{name}", document))
    return found


class _Dumper(yaml.SafeDumper):
    """Multi-line values (config snippets) as YAML literal blocks, the way people write them."""


def _represent_str(dumper: yaml.SafeDumper, data: str) -> yaml.ScalarNode:
    return dumper.represent_scalar("tag:yaml.org,2002:str", data, style="|" if "\n" in data else None)


_Dumper.add_representer(str, _represent_str)


def _dump(data: object, *, sort_keys: bool = True) -> str:
    return yaml.dump(data, Dumper=_Dumper, sort_keys=sort_keys, default_flow_style=False, width=1 << 16)


def _backend_name(qualified: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]", "_", qualified)


@click.command("render")
@click.option("-f", "--filename", "path", required=True, type=click.Path(dir_okay=False, allow_dash=True),
              help="A YAML file holding one or more HealthPolicy documents ('-' for stdin).")
@click.option("--controller", type=click.Choice(CONTROLLERS), default=None,
              help="Render for this ingress controller instead of the policy's spec.ingress.controller.")
@click.option("-o", "--output", type=click.Choice(_OUTPUTS), default="text", show_default=True,
              help="text: annotations and backend; annotations: YAML; backend: HAProxy section; sidecar: its YAML.")
def render_command(path: str, controller: str | None, output: str) -> None:
    """Print what a HealthPolicy does: Service annotations and the equivalent HAProxy backend."""
    try:
        with click.open_file(path, "r", encoding="utf-8") as stream:
            documents = list(yaml.safe_load_all(stream))
    except OSError as error:
        _fail(f"{path}: cannot read: {error.strerror or error}")
    except yaml.YAMLError as error:
        _fail(f"{path}: not valid YAML: {error}")
    try:
        policies = _policies(documents, path)
        if not policies:
            _fail(f"{path}: no HealthPolicy ({API_VERSION}) document found")
        rendered = [(name, parse_policy(doc.get("spec"), f"{path}: {name}: spec")) for name, doc in policies]
    except FieldError as error:
        _fail(str(error))

    blocks: list[str] = []
    for name, policy in rendered:
        chosen = controller or policy.ingress.controller
        backend = _backend_name(name)
        if output == "annotations":
            blocks.append(_dump({"metadata": {"annotations": render_annotations(policy, chosen)}}))
        elif output == "backend":
            blocks.append(render_backend(policy, name=backend, controller=chosen))
        elif output == "sidecar":
            blocks.append(_dump(render_sidecar_config(policy), sort_keys=False))
        else:
            annotations = _dump({"annotations": render_annotations(policy, chosen)})
            services = ", ".join(policy.ingress.services) or "every Service whose selector matches the pods"
            notes = "".join(f"# Note: {note}\n" for note in controller_notes(policy, chosen))
            blocks.append(
                f"# HealthPolicy {name} for {chosen}, on {services}\n{notes}"
                f"# Pod termination: {drain_summary(policy)}\n"
                f"# Agent weight: {weight_summary(policy)}\n"
                f"# Service annotations:\n{annotations}"
                f"# The equivalent HAProxy backend (servers are the governed pods):\n"
                + render_backend(policy, name=backend, controller=chosen)
            )
    click.echo(("---\n" if output in ("annotations", "sidecar") else "\n").join(blocks), nl=False)


def _fail(message: str) -> Any:
    click.echo(f"candor render: {message}", err=True)
    sys.exit(2)


# ---- `candor operator` (kopf; imported lazily so `candor render` never pays for it) -----------------


def _env(name: str, default: str | None = None) -> str | None:
    import os

    return os.environ.get(name) or default  # an empty variable means unset


@click.command("operator")
@click.option("--kubeconfig", type=click.Path(exists=True, dir_okay=False), default=None,
              help="Kubeconfig to use (default: KUBECONFIG, ~/.kube/config, then the pod's service account).")
@click.option("-n", "--namespace", "namespaces", multiple=True,
              help="Serve only these namespaces (repeatable; default: cluster-wide).")
@click.option("--sidecar-image", default=lambda: _env("CANDOR_SIDECAR_IMAGE", f"candor-sidecar:{VERSION}"),
              show_default=f"CANDOR_SIDECAR_IMAGE or candor-sidecar:{VERSION}", help="Image of the injected sidecar.")
@click.option("--sidecar-pull-policy", default=lambda: _env("CANDOR_SIDECAR_PULL_POLICY", "IfNotPresent"),
              type=click.Choice(["Always", "IfNotPresent", "Never"]), show_default="IfNotPresent")
@click.option("--webhook/--no-webhook", "webhook_enabled", default=True, show_default=True,
              help="Serve the pod-injection webhook.")
@click.option("--webhook-listen", default="0.0.0.0", show_default=True, help="Address the webhook listens on.")
@click.option("--webhook-port", type=click.IntRange(1, 65535), default=9443, show_default=True)
@click.option("--webhook-path", default="/candor", show_default=True,
              help="URL path prefix; the injection endpoint is <path>/inject.")
@click.option("--webhook-host", default=None, help="Host name the API server reaches the webhook at (managed mode).")
@click.option("--webhook-cert", default=lambda: _env("CANDOR_WEBHOOK_CERT"),
              type=click.Path(exists=True, dir_okay=False),
              help="Serving certificate (PEM), e.g. /etc/candor/webhook/tls.crt. [env CANDOR_WEBHOOK_CERT]")
@click.option("--webhook-key", default=lambda: _env("CANDOR_WEBHOOK_KEY"),
              type=click.Path(exists=True, dir_okay=False),
              help="Its private key (PEM). [env CANDOR_WEBHOOK_KEY]")
@click.option("--webhook-ca", default=lambda: _env("CANDOR_WEBHOOK_CA"),
              type=click.Path(exists=True, dir_okay=False),
              help="CA bundle for a kopf-managed webhook configuration. [env CANDOR_WEBHOOK_CA]")
@click.option("--webhook-managed", default=None,
              help="Let the operator keep a MutatingWebhookConfiguration of this name (needs extra RBAC).")
@click.option("--resync", type=click.FloatRange(min=1), default=60.0, show_default=True,
              help="Seconds between full re-reconciles of each policy (drift, late Services, conflicts).")
@click.option("--peering", default="candor", show_default=True, help="kopf peering object shared by replicas.")
@click.option("--standalone", is_flag=True, help="Run without peering (a single replica, or tests).")
@click.option("--priority", type=int, default=None,
              help="Peering priority (default random: exactly one of several replicas is active).")
@click.option("--liveness", default=None, help="Liveness endpoint, e.g. http://0.0.0.0:8080/healthz.")
@click.option("--metrics", "metrics_endpoint", default=None,
              help="Prometheus endpoint, e.g. http://0.0.0.0:8081/metrics (default: none).")
@click.option("--readiness", default=None,
              help="Readiness endpoint, e.g. http://0.0.0.0:8081/readyz: 200 once the webhook answers and kopf's "
                   "watches are answered (or the replica stands by, paused by peering).")
@click.option("--log-format", type=click.Choice(["text", "json"]), default="text", show_default=True)
@click.option("-v", "--verbose", is_flag=True, help="Debug logging.")
def operator_command(
    kubeconfig: str | None, namespaces: tuple[str, ...], sidecar_image: str, sidecar_pull_policy: str,
    webhook_enabled: bool, webhook_listen: str, webhook_port: int, webhook_path: str, webhook_host: str | None,
    webhook_cert: str | None, webhook_key: str | None, webhook_ca: str | None, webhook_managed: str | None,
    resync: float, peering: str, standalone: bool, priority: int | None, liveness: str | None,
    metrics_endpoint: str | None, readiness: str | None, log_format: str, verbose: bool,
) -> None:
    """Run the HealthPolicy operator: Service annotations, sidecar ConfigMaps, pod injection."""
    # kopf imports the official `kubernetes` client whenever it is installed (for its optional model types and
    # login); the operator uses neither, and `candor check` (which does) runs in another process. Keeping it out
    # saves the operator ~19 MiB resident and ~360 modules.
    sys.modules.setdefault("kubernetes", None)  # type: ignore[arg-type]
    from candor_operator.runner import run_operator
    from candor_operator.settings import OperatorSettings, WebhookSettings, sidecar_settings

    if webhook_enabled and not (webhook_cert and webhook_key):
        _fail_operator("--webhook-cert and --webhook-key are required for the injection webhook (or --no-webhook)")
    if metrics_endpoint:
        from candor_operator.metrics_server import parse_endpoint

        try:
            parse_endpoint(metrics_endpoint)
        except ValueError as error:
            _fail_operator(str(error))
    settings = OperatorSettings(
        sidecar=sidecar_settings(image=sidecar_image, pull_policy=sidecar_pull_policy),
        webhook=WebhookSettings(
            enabled=webhook_enabled, listen=webhook_listen, port=webhook_port, path=webhook_path, host=webhook_host,
            cert_file=webhook_cert, key_file=webhook_key, ca_file=webhook_ca, managed=webhook_managed,
        ),
        namespaces=namespaces, resync_seconds=resync, peering=peering, standalone=standalone, priority=priority,
        liveness=liveness, metrics=metrics_endpoint, readiness=readiness,
    )
    run_operator(settings, kubeconfig=kubeconfig, log_format=log_format, verbose=verbose)


def _fail_operator(message: str) -> Any:
    click.echo(f"candor operator: {message}", err=True)
    sys.exit(2)


@click.command("finalize")
@click.option("--kubeconfig", type=click.Path(exists=True, dir_okay=False), default=None,
              help="Kubeconfig to use (default: KUBECONFIG, ~/.kube/config, then the pod's service account).")
@click.option("--timeout", type=click.FloatRange(min=1), default=120.0, show_default=True,
              help="Seconds to wait for the operator to finalize the policies.")
def finalize_command(kubeconfig: str | None, timeout: float) -> None:
    """Delete every HealthPolicy and wait until the running operator has undone what it wrote.

    The chart runs this as its pre-delete hook, so `helm uninstall` leaves no Terminating CRD behind.
    """
    import asyncio

    from candor_operator.finalize import finalize_all

    left = asyncio.run(finalize_all(kubeconfig, timeout))
    if left:
        raise click.ClickException(f"not finalized within {timeout:.0f} s (is the operator running?): "
                                   + ", ".join(left[:10]))
    click.echo("every HealthPolicy finalized")


@click.command("check")
@click.option("--kubeconfig", type=click.Path(exists=True, dir_okay=False), default=None,
              help="Kubeconfig to use (default: KUBECONFIG, ~/.kube/config, then the pod's service account).")
@click.option("--context", default=None, help="Kubeconfig context (default: the current one).")
@click.option("-n", "--namespace", default=None, help="Check the HealthPolicies of this namespace only.")
@click.option("--peering", default="candor", show_default=True, help="The operator's kopf peering object.")
@click.option("-o", "--output", type=click.Choice(["text", "json"]), default="text", show_default=True)
@click.option("--timeout", type=click.FloatRange(min=1), default=10.0, show_default=True,
              help="Seconds per API request.")
def check_command(kubeconfig: str | None, context: str | None, namespace: str | None, peering: str, output: str,
                  timeout: float) -> None:
    """Tell what is wrong with Candor in the cluster: CRD, operator, webhook, each policy's Services and pods.

    Exit status: 0 when nothing is wrong (warnings allowed), 1 when a check fails, 2 when the cluster
    cannot be reached or refuses the credentials.
    """
    from candor_operator.check import run_checks
    from candor_operator.check_cluster import Cluster, ClusterError, api_client

    try:
        cluster = Cluster(api_client(kubeconfig, context), timeout=timeout)
        report = run_checks(cluster, namespace=namespace, peering=peering)
    except ClusterError as error:
        click.echo(f"candor check: cannot check the cluster: {error}", err=True)
        sys.exit(2)
    except Exception as error:  # the kubeconfig itself: missing, malformed, a failing credential plugin
        click.echo(f"candor check: cannot use the kubeconfig: {type(error).__name__}: {error}", err=True)
        sys.exit(2)
    click.echo(report.as_json() if output == "json" else report.as_text(), nl=output == "json")
    sys.exit(1 if report.failed else 0)
