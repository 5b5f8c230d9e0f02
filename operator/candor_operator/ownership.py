"""Which Service annotations Candor wrote, and the merge patch that moves them to a new desired set.

Candor records what it owns in one annotation, `candor.io/managed-annotations`, a JSON object:

    {"policy": "web", "keys": ["haproxy.org/check", ...], "replaced": {"haproxy.org/check": "false"}}

`keys` are the annotation keys Candor set; `replaced` keeps a user's value that a policy overrode, so
releasing the Service (a removed setting, a deleted policy) restores it instead of deleting it. Any
key not in the record belongs to the user and is never touched. The record lives on the Service
itself, so it survives operator restarts and is shared by operator replicas.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field

from candor_operator.api_names import MANAGED_ANNOTATIONS


@dataclass(frozen=True)
class ManagedRecord:
    policy: str | None = None
    keys: frozenset[str] = frozenset()
    replaced: Mapping[str, str] = field(default_factory=dict)

    def to_json(self) -> str:
        return json.dumps(
            {"policy": self.policy, "keys": sorted(self.keys), "replaced": dict(sorted(self.replaced.items()))},
            separators=(",", ":"),
        )


def parse_record(text: str | None) -> ManagedRecord:
    """The record in a Service's annotations; an absent or mangled one owns nothing (never guess ownership)."""
    if not text:
        return ManagedRecord()
    try:
        raw = json.loads(text)
    except ValueError:
        return ManagedRecord()
    if not isinstance(raw, dict):
        return ManagedRecord()
    policy = raw.get("policy")
    keys = raw.get("keys")
    replaced = raw.get("replaced")
    return ManagedRecord(
        policy=policy if isinstance(policy, str) else None,
        keys=frozenset(k for k in keys if isinstance(k, str)) if isinstance(keys, list) else frozenset(),
        replaced={str(k): str(v) for k, v in replaced.items()} if isinstance(replaced, dict) else {},
    )


def record_of(annotations: Mapping[str, str] | None) -> ManagedRecord:
    return parse_record((annotations or {}).get(MANAGED_ANNOTATIONS))


def annotation_patch(
    current: Mapping[str, str] | None,
    desired: Mapping[str, str] | None,
    policy: str | None,
) -> dict[str, str | None]:
    """The `metadata.annotations` JSON-merge-patch taking a Service from `current` to `desired`.

    `desired=None` releases the Service: every key Candor wrote is removed (or the user's value it
    replaced is restored) and the record disappears. Returns {} when nothing needs to change, so a
    converged reconcile sends no request at all.
    """
    current = dict(current or {})
    record = record_of(current)
    patch: dict[str, str | None] = {}

    def restore(key: str) -> None:
        original = record.replaced.get(key)
        if current.get(key) != original:
            patch[key] = original  # None deletes the key

    if desired is None:
        for key in record.keys:
            restore(key)
        if MANAGED_ANNOTATIONS in current:
            patch[MANAGED_ANNOTATIONS] = None
        return patch

    if MANAGED_ANNOTATIONS in desired:
        raise ValueError(f"{MANAGED_ANNOTATIONS} is Candor's bookkeeping, not a rendered annotation")
    replaced: dict[str, str] = {}
    for key, value in desired.items():
        if key in record.keys:
            if key in record.replaced:
                replaced[key] = record.replaced[key]
        elif key in current:
            replaced[key] = current[key]  # a user's value: keep it to give back on release
        if current.get(key) != value:
            patch[key] = value
    for key in record.keys - set(desired):
        restore(key)
    new_record = ManagedRecord(policy=policy, keys=frozenset(desired), replaced=replaced).to_json()
    if current.get(MANAGED_ANNOTATIONS) != new_record:
        patch[MANAGED_ANNOTATIONS] = new_record
    return patch
