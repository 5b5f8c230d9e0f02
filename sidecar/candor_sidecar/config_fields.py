"""The vocabulary the sidecar config is declared in: each key's kind (the values it takes, their unit and
bounds), its default and its description, attached to the config's frozen dataclasses as `dataclasses.Field`
metadata.

candor_sidecar.config declares every key once with the helpers below, as candor_operator.policy_fields does
for the HealthPolicy. Everything else is derived from that one declaration: the defaults (the dataclasses'
own), the reading of a file (`read_section`: the allowed keys, each value, the rules relating two keys), and
the reference page (candor_sidecar.config_reference). So a new key is one line in candor_sidecar.config.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import math
from abc import ABC, abstractmethod
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, ClassVar, TypeVar

from candor_sidecar.durations import format_duration, parse_duration
from candor_sidecar.field_error import FieldError
from candor_sidecar.shown import show

T = TypeVar("T")
_METADATA_KEY = "candor.io/sidecar-config"


# --- the kinds: what a key accepts, said the same way by the reader and by the reference page -------------


class Kind(ABC):
    """A key's kind: `read` checks a value from the file (raising FieldError naming `key`) and returns the typed
    value; `type` and `bounds` are its reference page columns; `written` shows a typed value as YAML."""

    type: ClassVar[str] = ""

    @property
    def bounds(self) -> str:
        return ""

    @abstractmethod
    def read(self, value: object, key: str) -> Any:
        """The typed value of `value`, or FieldError naming `key` and what is allowed."""

    def written(self, value: object) -> str:
        return "none" if value is None else str(value)


@dataclass(frozen=True)
class AbsolutePath(Kind):
    nullable: bool = False  # null is allowed and means "none" (the typed value None)
    type = "path"

    @property
    def bounds(self) -> str:
        return "starts with /" + (", or null" if self.nullable else "")

    def read(self, value: object, key: str) -> str | None:
        if value is None and self.nullable:
            return None
        return _absolute_path(value, key)


def _absolute_path(value: object, key: str) -> str:
    if not isinstance(value, str) or not value.startswith("/"):
        raise FieldError(key, f"expected an absolute path, got {show(value)}")
    return value


@dataclass(frozen=True)
class PathList(Kind):
    type = "list of paths"

    @property
    def bounds(self) -> str:
        return "each starts with /"

    def read(self, value: object, key: str) -> tuple[str, ...]:
        if value is None:
            return ()
        if not isinstance(value, list):
            raise FieldError(key, f"expected a list of absolute paths, got {show(value)}")
        return tuple(_absolute_path(item, f"{key}[{index}]") for index, item in enumerate(value))

    def written(self, value: object) -> str:
        assert isinstance(value, tuple)
        return f"[{', '.join(value)}]"


@dataclass(frozen=True)
class Port(Kind):
    type = "TCP port"

    @property
    def bounds(self) -> str:
        return "1 to 65535"

    def read(self, value: object, key: str) -> int:
        if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= 65535:
            raise FieldError(key, f"expected a TCP port, an integer from 1 to 65535, got {show(value)}")
        return value


@dataclass(frozen=True)
class PortList(Kind):
    """Ports given by repeating a flag; each once, in the order first given."""

    type = "TCP ports"

    @property
    def bounds(self) -> str:
        return "each 1 to 65535"

    def read(self, value: object, key: str) -> tuple[int, ...]:
        assert isinstance(value, tuple | list)
        return tuple(dict.fromkeys(Port().read(port, key) for port in value))

    def written(self, value: object) -> str:
        assert isinstance(value, tuple)
        return ", ".join(str(port) for port in value) or "none"


@dataclass(frozen=True)
class Address(Kind):
    type = "IP address"

    def read(self, value: object, key: str) -> str:
        try:
            ipaddress.ip_address(value if isinstance(value, str) else "")
        except ValueError:
            raise FieldError(
                key, f"expected an IP address to listen on such as 0.0.0.0, 127.0.0.1 or ::, got {show(value)}"
            ) from None
        assert isinstance(value, str)
        return value


@dataclass(frozen=True)
class Percent(Kind):
    type = "number (%)"

    @property
    def bounds(self) -> str:
        return "above 0, at most 100"

    def read(self, value: object, key: str) -> float:
        if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value) \
                or not 0 < value <= 100:
            raise FieldError(key, f"expected a percentage, a number above 0 and at most 100, got {show(value)}")
        return float(value)

    def written(self, value: object) -> str:
        assert isinstance(value, float)
        return f"{value:g}"


@dataclass(frozen=True)
class Duration(Kind):
    """A duration in the Go form the HealthPolicy uses; the typed value is in seconds."""

    minimum: float
    maximum: float
    type = "duration"

    @property
    def bounds(self) -> str:
        return f"{format_duration(self.minimum)} to {format_duration(self.maximum)}"

    def read(self, value: object, key: str) -> float:
        return parse_duration(value, key, minimum=self.minimum, maximum=self.maximum)

    def written(self, value: object) -> str:
        assert isinstance(value, float)
        return format_duration(value)


@dataclass(frozen=True)
class Seconds(Kind):
    """A number of seconds given as a flag's number (not a duration: the pod spec's own unit)."""

    maximum: float
    type = "seconds"

    @property
    def bounds(self) -> str:
        return f"0 to {self.maximum:.0f}"

    def read(self, value: object, key: str) -> float:
        if isinstance(value, bool) or not isinstance(value, int | float) or not 0 <= value <= self.maximum:
            raise FieldError(key, f"expected seconds from 0 on, got {value}")
        return float(value)

    def written(self, value: object) -> str:
        assert isinstance(value, float)
        return f"{value:g}"


@dataclass(frozen=True)
class Limit(Kind):
    """A positive integer, or null for no limit."""

    maximum: int
    type = "integer or null"

    @property
    def bounds(self) -> str:
        return f"1 to {self.maximum}"

    def read(self, value: object, key: str) -> int | None:
        if value is None:
            return None
        if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= self.maximum:
            raise FieldError(key, f"expected an integer from 1 to {self.maximum} (or null for no limit), "
                                  f"got {show(value)}")
        return value

    def written(self, value: object) -> str:
        return "none (no limit)" if value is None else str(value)


@dataclass(frozen=True)
class ChoiceList(Kind):
    """A non-empty list of distinct `values`; the typed value is a tuple in the order given."""

    values: tuple[str, ...]
    what: str  # the values' name in an error message: "load figures"
    type = "list"

    @property
    def bounds(self) -> str:
        return f"some of {', '.join(self.values)}, each once"

    def read(self, value: object, key: str) -> tuple[str, ...]:
        if not isinstance(value, list) or not value or any(item not in self.values for item in value) \
                or len(set(value)) != len(value):
            raise FieldError(key, f"expected a non-empty list of distinct {self.what} from {', '.join(self.values)}, "
                                  f"got {show(value)}")
        return tuple(value)

    def written(self, value: object) -> str:
        assert isinstance(value, tuple)
        return f"[{', '.join(value)}]"


@dataclass(frozen=True)
class Section:
    """A nested mapping whose own keys are declared on `model` (read by read_section, a heading of its own on
    the reference page); `optional`: absent (or null) means off (None)."""

    model: type[Any]
    optional: bool = False


# --- rules relating two keys of one section: checked once the section is read, stated on the reference page


@dataclass(frozen=True)
class Below:
    """`key` must stay below `limit`."""

    key: str
    limit: float
    why: str

    def requirement(self, prefix: str) -> str:
        return f"must be below {self.limit:g} ({self.why})"

    def check(self, section: object, prefix: str) -> None:
        value = getattr(section, _attribute(type(section), self.key))
        if value >= self.limit:
            raise FieldError(prefix + self.key, f"{self.requirement(prefix)}, got {value:g}")


@dataclass(frozen=True)
class AtLeast:
    """The duration `key` must be at least the duration `other` (the HealthPolicy's rule, where it has one)."""

    key: str
    other: str

    def requirement(self, prefix: str) -> str:
        return f"must be at least {prefix}{self.other}"

    def check(self, section: object, prefix: str) -> None:
        value = getattr(section, _attribute(type(section), self.key))
        other = getattr(section, _attribute(type(section), self.other))
        if value < other:
            raise FieldError(prefix + self.key, f"{self.requirement(prefix)} ({format_duration(other)}), "
                                                f"got {format_duration(value)}")


Rule = Below | AtLeast


# --- the helpers candor_sidecar.config declares its keys with ------------------------------------------
# Each returns a dataclasses.Field (typed Any, as dataclasses.field is in use) carrying the Spec.


@dataclass(frozen=True)
class Spec:
    """One key's declaration. `key`: its name in the file (camelCase of the attribute unless given), or the
    flag's (`--control-socket`) for a flag: flags are per pod, so they are never keys of the file."""

    kind: Kind | Section
    doc: str
    key: str | None = None
    flag: bool = False


def key(kind: Kind, default: object, doc: str, *, name: str | None = None) -> Any:
    """A key of the file with its default (the typed value)."""
    return dataclasses.field(default=default, metadata={_METADATA_KEY: Spec(kind, doc, name)})


def required_key(kind: Kind, doc: str) -> Any:
    """A key whose default depends on the section it is in (the section's default instance gives it)."""
    return dataclasses.field(metadata={_METADATA_KEY: Spec(kind, doc)})


def section(model: type[Any], doc: str, default: object = None, *, optional: bool = False) -> Any:
    """A nested mapping. Absent, it takes `default` (a `model` instance; `model()` unless given), or is off
    (None) when optional."""
    spec = Spec(Section(model, optional), doc)
    if optional:
        return dataclasses.field(default=None, metadata={_METADATA_KEY: spec})
    return dataclasses.field(default_factory=(lambda: default) if default is not None else model,
                             metadata={_METADATA_KEY: spec})


def flag(name: str, kind: Kind, default: object, doc: str) -> Any:
    """A per-pod value given on the command line (the injection passes it), never a key of the file."""
    return dataclasses.field(default=default, metadata={_METADATA_KEY: Spec(kind, doc, name, flag=True)})


# --- reading the declarations -----------------------------------------------------------------------------


@dataclass(frozen=True)
class Declared:
    """A declared key of a model: its name in the file (or the flag), the dataclass attribute, its Spec."""

    name: str
    attribute: str
    spec: Spec


def json_name(attribute: str) -> str:
    """The file's camelCase name of a dataclass attribute: max_percent -> maxPercent."""
    first, *rest = attribute.split("_")
    return first + "".join(part.capitalize() for part in rest)


def declared(model: type[Any], *, flags: bool = False) -> tuple[Declared, ...]:
    """The keys `model` declares, in order; with `flags`, its flags instead."""
    return tuple(
        Declared(spec.key or json_name(item.name), item.name, spec)
        for item in dataclasses.fields(model)
        for spec in [item.metadata.get(_METADATA_KEY)]
        if isinstance(spec, Spec) and spec.flag == flags
    )


def rules(model: type[Any]) -> tuple[Rule, ...]:
    return tuple(getattr(model, "RULES", ()))


def _attribute(model: type[Any], name: str) -> str:
    (found,) = [item.attribute for item in declared(model) if item.name == name]
    return found


def _mapping(value: object, key: str, allowed: tuple[str, ...]) -> Mapping[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise FieldError(key or "(top level)", f"expected a mapping with keys {', '.join(allowed)}, got {show(value)}")
    for name in value:
        if name not in allowed:
            shown = str(name)[:60]
            raise FieldError(f"{key}.{shown}" if key else shown, f"unknown key; allowed here: {', '.join(allowed)}")
    return value


def read_flag(model: type[Any], attribute: str, value: object) -> Any:
    """A flag's value read by its declared kind; an error names the flag (`--control-socket`)."""
    (item,) = [item for item in declared(model, flags=True) if item.attribute == attribute]
    assert isinstance(item.spec.kind, Kind)  # flags are never sections
    return item.spec.kind.read(value, item.name)


def read_section(model: type[T], value: object, key: str, default: T) -> T:
    """`value` (a mapping from the file, None for none) read as a `model`: its keys checked, each value read
    by its kind, keys left out taken from `default`, then the model's rules checked. `key` is the section's
    dotted name ("" at the top level), so every error names the full key (`deadlock.maxJobDuration`)."""
    items = declared(model)
    section_value = _mapping(value, key, tuple(item.name for item in items))
    values: dict[str, Any] = {}
    for item in items:
        dotted = f"{key}.{item.name}" if key else item.name
        kind = item.spec.kind
        given = section_value.get(item.name)
        if isinstance(kind, Section):
            if kind.optional:
                values[item.attribute] = None if given is None else read_section(kind.model, given, dotted,
                                                                                  kind.model())
            else:
                values[item.attribute] = read_section(kind.model, given, dotted, getattr(default, item.attribute))
        elif item.name in section_value:
            values[item.attribute] = kind.read(given, dotted)
    result: T = dataclasses.replace(default, **values)  # type: ignore[type-var]
    for rule in rules(model):
        rule.check(result, f"{key}." if key else "")
    return result
