"""Apply a CRD's structural schema to an object the way the API server does, without one.

Defaults are filled in (an absent object with `default: {}` gets its nested defaults), then types,
enums, ranges, patterns, lengths, required fields, set-list uniqueness and every
`x-kubernetes-validations` CEL rule are checked; CEL runs in cel-python. Errors carry the field path
the API server would report (the rule's `fieldPath` appended). It answers "does this table of
policies mean what the CRD says" in milliseconds; tests against a real kube-apiserver stay the proof.
"""

from __future__ import annotations

import copy
import re
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

import celpy
import yaml

CRD_PATH = Path(__file__).resolve().parents[2] / "crds" / "healthpolicy.yaml"
_TYPES: dict[str, type | tuple[type, ...]] = {"object": dict, "array": list, "string": str, "integer": int,
                                              "boolean": bool}


@dataclass(frozen=True)
class SchemaError:
    field: str
    problem: str


@cache
def spec_schema(path: Path = CRD_PATH) -> dict[str, Any]:
    crd = yaml.safe_load(path.read_text())
    (version,) = crd["spec"]["versions"]
    schema: dict[str, Any] = version["schema"]["openAPIV3Schema"]["properties"]["spec"]
    return schema


@cache
def _program(rule: str) -> Any:
    environment = celpy.Environment()
    return environment.program(environment.compile(rule))


def apply_defaults(node: dict[str, Any], value: Any) -> Any:
    if node.get("type") == "object" and isinstance(value, dict):
        for name, child in node.get("properties", {}).items():
            if name not in value and "default" in child:
                value[name] = copy.deepcopy(child["default"])
            if name in value:
                value[name] = apply_defaults(child, value[name])
    elif node.get("type") == "array" and isinstance(value, list) and "items" in node:
        value = [apply_defaults(node["items"], item) for item in value]
    return value


def _check(node: dict[str, Any], value: Any, path: str, errors: list[SchemaError]) -> None:
    kind = node.get("type")
    if kind and ((isinstance(value, bool) and kind != "boolean") or not isinstance(value, _TYPES[kind])):
        errors.append(SchemaError(path, f"must be of type {kind}"))
        return
    if "enum" in node and value not in node["enum"]:
        errors.append(SchemaError(path, f"must be one of {node['enum']}"))
    if "minimum" in node and value < node["minimum"]:
        errors.append(SchemaError(path, f"must be at least {node['minimum']}"))
    if "maximum" in node and value > node["maximum"]:
        errors.append(SchemaError(path, f"must be at most {node['maximum']}"))
    if isinstance(value, str):
        # fullmatch for RE2's `$`, which never matches before a final newline (every pattern here is anchored).
        if "pattern" in node and not re.fullmatch(node["pattern"], value):
            errors.append(SchemaError(path, f"must match {node['pattern']}"))
        if not node.get("minLength", 0) <= len(value) <= node.get("maxLength", len(value)):
            errors.append(SchemaError(path, "length out of range"))
    if kind == "object":
        for name in node.get("required", []):
            if name not in value:
                errors.append(SchemaError(f"{path}.{name}", "required"))
        for name, item in value.items():
            child = node.get("properties", {}).get(name, node.get("additionalProperties"))
            if isinstance(child, dict):
                _check(child, item, f"{path}.{name}", errors)
    if kind == "array":
        if len(value) > node.get("maxItems", len(value)):
            errors.append(SchemaError(path, f"must have at most {node['maxItems']} items"))
        if len(value) < node.get("minItems", 0):
            errors.append(SchemaError(path, f"must have at least {node['minItems']} items"))
        for index, item in enumerate(value):
            if node.get("x-kubernetes-list-type") == "set" and item in value[:index]:
                errors.append(SchemaError(f"{path}[{index}]", "duplicate value"))
            _check(node["items"], item, f"{path}[{index}]", errors)
    for rule in node.get("x-kubernetes-validations", []):
        where = path + rule.get("fieldPath", "")
        try:
            result = _program(rule["rule"]).evaluate({"self": celpy.json_to_cel(value)})  # type: ignore[attr-defined]
        except Exception as error:  # an evaluation error rejects the object, as in the API server
            errors.append(SchemaError(where, f"CEL error: {error}"))
            continue
        if isinstance(result, celpy.CELEvalError) or not bool(result):  # type: ignore[attr-defined]
            errors.append(SchemaError(where, rule["message"]))


def validate_spec(spec: dict[str, Any]) -> list[SchemaError]:
    """The schema errors of a HealthPolicy spec after defaulting (empty: the API server would accept it)."""
    schema = spec_schema()
    errors: list[SchemaError] = []
    _check(schema, apply_defaults(schema, copy.deepcopy(spec)), "spec", errors)
    return errors
