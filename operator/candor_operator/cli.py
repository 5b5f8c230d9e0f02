"""`candor render` (and `candor operator`): the operator's command-line entry points."""

from __future__ import annotations

import re
import sys
from collections.abc import Mapping
from typing import Any

import click
import yaml

from candor_operator.policy import CONTROLLERS, PolicyError, parse_policy
from candor_operator.render import render_annotations, render_backend, render_sidecar_config

API_VERSION = "candor.io/v1alpha1"
_OUTPUTS = ("text", "annotations", "backend", "sidecar")


def _policies(documents: list[Any], source: str) -> list[tuple[str, Mapping[str, Any]]]:
    """(namespace/name, document) of every HealthPolicy in the file; other kinds are skipped."""
    found: list[tuple[str, Mapping[str, Any]]] = []
    for index, document in enumerate(documents):
        if not isinstance(document, Mapping) or document.get("kind") != "HealthPolicy":
            continue
        where = f"{source} (document {index + 1})"
        if document.get("apiVersion") != API_VERSION:
            raise PolicyError(f"{where}: apiVersion", f"must be {API_VERSION}, got {document.get('apiVersion')!r}")
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
    except PolicyError as error:
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
            blocks.append(
                f"# HealthPolicy {name} for {chosen}, on {services}\n"
                f"# Service annotations:\n{annotations}"
                f"# The equivalent HAProxy backend (servers are the governed pods):\n"
                + render_backend(policy, name=backend, controller=chosen)
            )
    click.echo(("---\n" if output in ("annotations", "sidecar") else "\n").join(blocks), nl=False)


def _fail(message: str) -> Any:
    click.echo(f"candor render: {message}", err=True)
    sys.exit(2)
