"""The vocabulary the HealthPolicy's fields are declared in: what kind of value each holds, its bounds,
its default and its description, attached to the typed dataclasses as `dataclasses.Field` metadata.

candor_operator.policy_model declares every field of the spec once, with the helpers below, on the
frozen dataclasses the operator reads. Two interpreters read that one declaration:
candor_operator.policy validates a spec with it (for `candor render -f`, and for a CRD installed
without its schema) and candor_operator.crd generates the CRD's openAPIV3Schema from it. So the API
server and the operator cannot state different rules, and a new field is one line in policy_model.

Nothing here validates; the kinds are data.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

# The spec's camelCase names follow the sidecar config's rule (expect_status -> expectStatus), so one function.
from candor_sidecar.config_fields import json_name
from candor_sidecar.durations import NANOS_PER_SECOND, parse_duration_nanos

# Kubernetes' label grammar (apimachinery's validation): a value, a name, and a key ([prefix/]name, the
# prefix a DNS subdomain). A schema cannot constrain map keys, so the CRD states the key grammar in CEL;
# KEY_LENGTHS bounds the prefix and the name, which the key pattern alone cannot.
LABEL_VALUE_PATTERN = r"^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$"
LABEL_KEY_PATTERN = (
    r"^([a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*/)?[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?$"
)
LABEL_KEY_LENGTHS_PATTERN = r"^([^/]{1,253}/)?[^/]{1,63}$"
LABEL_KEY_MAX_LENGTH = 253 + 1 + 63
LABEL_VALUE_MAX_LENGTH = 63

_METADATA_KEY = "candor.io/spec"


@dataclass(frozen=True)
class Integer:
    minimum: int
    maximum: int


@dataclass(frozen=True)
class Duration:
    """Go form (`500ms`, `1h30m`) bounds; a minimum of `0s` is no bound beyond the pattern (never negative)."""

    minimum: str
    maximum: str


@dataclass(frozen=True)
class Text:
    pattern: str
    max_length: int
    shape: str  # what a value must be, for error messages: "an absolute path without whitespace"
    min_length: int = 1


@dataclass(frozen=True)
class Choice:
    values: tuple[str, ...]


@dataclass(frozen=True)
class Boolean:
    pass


@dataclass(frozen=True)
class TextList:
    """A list of unique strings (a set in the CRD: `x-kubernetes-list-type: set`)."""

    item: Text
    max_items: int


@dataclass(frozen=True)
class ChoiceList:
    """A non-empty set of `values` (a set in the CRD: `x-kubernetes-list-type: set`, items an enum)."""

    values: tuple[str, ...]


@dataclass(frozen=True)
class Section:
    """A nested object whose own fields are declared on `model`, a dataclass of policy_model."""

    model: type[Any]


@dataclass(frozen=True)
class LabelSelector:
    """Kubernetes' LabelSelector, not empty: its grammar is Kubernetes', so only the limits are Candor's."""

    max_labels: int = 32
    max_expressions: int = 16
    max_values: int = 64
    operators: tuple[str, ...] = ("In", "NotIn", "Exists", "DoesNotExist")


Kind = Integer | Duration | Text | Choice | Boolean | TextList | ChoiceList | Section | LabelSelector


@dataclass(frozen=True)
class Spec:
    """One field's declaration: its kind, the CRD default (JSON form; None: none), whether it is required."""

    kind: Kind
    default: object
    required: bool
    description: str | None


# --- cross-field rules: one declaration gives the CRD's CEL rule and the operator's check ----------


@dataclass(frozen=True)
class Compare:
    """`field` relates to `other` (both dotted spec paths, the same kind); refusals name `field`."""

    field: str
    relation: str  # ">=", "<=" or "!="
    other: str
    why: str = ""  # appended to the message: the reason a user would ask for
    zero_means: str = ""  # set: a zero `field` is always allowed, and means this ("no ramp")

    @property
    def requirement(self) -> str:
        """`must be at least agentCheck.interval`: the words of the CRD's message and of the operator's error."""
        words = {">=": "be at least", "<=": "not exceed", "!=": "differ from"}[self.relation]
        if self.zero_means:
            words = f"be 0s ({self.zero_means}) or {words.removeprefix('be ')}"
        return f"must {words} {self.other}"


@dataclass(frozen=True)
class Needs:
    """`field` may be set only together with `other`."""

    field: str
    other: str
    why: str

    @property
    def requirement(self) -> str:
        return f"needs {self.other}"


Rule = Compare | Needs


# --- the helpers policy_model declares its fields with ---------------------------------------------
# Each returns a dataclasses.Field (typed Any, as dataclasses.field is in use) carrying the Spec.


def _field(kind: Kind, default: object, value: object, doc: str | None, required: bool = False) -> Any:
    metadata = {_METADATA_KEY: Spec(kind, default, required, doc)}
    if required:
        return dataclasses.field(metadata=metadata)
    return dataclasses.field(default=value, metadata=metadata)


def integer(default: int | None, minimum: int, maximum: int, doc: str | None = None) -> Any:
    return _field(Integer(minimum, maximum), default, default, doc)


def duration(default: str | None, minimum: str, maximum: str, doc: str | None = None) -> Any:
    """A duration field; the typed value is in seconds, the CRD default in Go form."""
    seconds = None if default is None else parse_duration_nanos(default, "default") / NANOS_PER_SECOND
    return _field(Duration(minimum, maximum), default, seconds, doc)


def text(default: str, kind: Text, doc: str | None = None) -> Any:
    return _field(kind, default, default, doc)


def choice(default: str | None, values: tuple[str, ...], doc: str | None = None) -> Any:
    """One of `values`; without a default the field is required (within its section)."""
    return _field(Choice(values), default, default, doc, required=default is None)


def boolean(default: bool, doc: str | None = None) -> Any:
    return _field(Boolean(), default, default, doc)


def text_list(item: Text, max_items: int, doc: str | None = None) -> Any:
    return _field(TextList(item, max_items), None, (), doc)


def choice_list(default: tuple[str, ...], values: tuple[str, ...], doc: str | None = None) -> Any:
    """Some of `values`, each at most once; the typed value is a tuple in the order given."""
    return _field(ChoiceList(values), list(default), default, doc)


def section(model: type[Any], doc: str | None = None, *, optional: bool = False) -> Any:
    """A nested object. Present by default (`default: {}` in the CRD, so the API server fills in its
    defaults) unless optional, where leaving it out switches the feature off (None)."""
    if optional:
        return _field(Section(model), None, None, doc)
    return _field(Section(model), {}, model(), doc)


def label_selector(doc: str) -> Any:
    return _field(LabelSelector(), None, None, doc, required=True)


# --- reading the declarations ---------------------------------------------------------------------


@dataclass(frozen=True)
class Declared:
    """A declared field of a model: the JSON name, the dataclass attribute, and its Spec."""

    name: str
    attribute: str
    spec: Spec


def declared(model: type[Any]) -> tuple[Declared, ...]:
    """The fields `model` declares, in order (its other dataclass fields, if any, are not spec fields)."""
    return tuple(
        Declared(json_name(item.name), item.name, item.metadata[_METADATA_KEY])
        for item in dataclasses.fields(model)
        if _METADATA_KEY in item.metadata
    )


def leaves(model: type[Any], prefix: str = "") -> Iterator[tuple[str, Spec]]:
    """(dotted spec path, Spec) for every field that is not a section, depth first."""
    for item in declared(model):
        dotted = prefix + item.name
        if isinstance(item.spec.kind, Section):
            yield from leaves(item.spec.kind.model, dotted + ".")
        else:
            yield dotted, item.spec


def lookup(model: type[Any], dotted: str) -> Declared:
    """The declaration at a dotted spec path (`httpCheck.interval`)."""
    head, _, rest = dotted.partition(".")
    (found,) = [item for item in declared(model) if item.name == head]
    if not rest:
        return found
    assert isinstance(found.spec.kind, Section), dotted
    return lookup(found.spec.kind.model, rest)
