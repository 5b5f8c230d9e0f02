"""A YAML reader for config files written by people or by the operator: bounded, strict, never a traceback.

PyYAML's safe loader still expands aliases without limit (a "billion laughs" file of a few hundred
bytes becomes gigabytes), composes nesting by recursion (20,000 `[` raise RecursionError), keeps
the last of two equal keys without a word, and reads whatever bytes it is given. A config needs none
of that, so this reader refuses aliases, nesting deeper than MAX_DEPTH, duplicate keys, files over
MAX_BYTES and bytes that are not UTF-8, each as a FieldError naming the key path where it happened.
"""

from __future__ import annotations

import os
from typing import Any

import yaml
from yaml.events import AliasEvent
from yaml.nodes import MappingNode, Node, ScalarNode

from candor_sidecar.field_error import FieldError

MAX_BYTES = 1 << 20
MAX_DEPTH = 32


def _key_text(index: object) -> str | None:
    if isinstance(index, ScalarNode):
        return str(index.value)[:60]
    if isinstance(index, int):
        return f"[{index}]"
    return None


class _StrictLoader(yaml.SafeLoader):
    def __init__(self, stream: str, source: str) -> None:
        self._path: list[str] = []
        self._source = source
        self._node_paths: dict[int, str] = {}
        super().__init__(stream)

    def where(self) -> str:
        dotted = ""
        for part in self._path:
            dotted += part if part.startswith("[") or not dotted else f".{part}"
        return dotted or self._source

    def construct_object(self, node: Node, deep: bool = False) -> Any:
        """Construct as SafeLoader does; a value it refuses (a tag, a huge integer) names its key."""
        try:
            return super().construct_object(node, deep)
        except FieldError:
            raise
        except (yaml.YAMLError, ValueError, TypeError) as error:
            problem = getattr(error, "problem", None) or str(error)
            where = self._node_paths.get(id(node), self._source)
            raise FieldError(where, f"unreadable value: {problem[:120]}") from None

    def compose_node(self, parent: Node | None, index: int) -> Node | None:
        name = _key_text(index)
        if name is not None:
            self._path.append(name)
        try:
            if self.check_event(AliasEvent):
                raise FieldError(self.where(), "YAML aliases (*name) are not allowed in a config")
            if len(self._path) > MAX_DEPTH:
                raise FieldError(self.where(), f"nested deeper than {MAX_DEPTH} levels")
            node = super().compose_node(parent, index)
            self._node_paths[id(node)] = self.where()
            if isinstance(node, MappingNode):
                self._refuse_duplicates(node)
            return node
        finally:
            if name is not None:
                self._path.pop()

    def _refuse_duplicates(self, node: MappingNode) -> None:
        seen: set[tuple[str, str]] = set()
        for key, _ in node.value:
            if isinstance(key, ScalarNode):
                identity = (key.tag, key.value)
                if identity in seen:
                    self._path.append(str(key.value)[:60])
                    where = self.where()
                    self._path.pop()
                    raise FieldError(where, "duplicate key (each key may appear once)")
                seen.add(identity)


def parse_yaml(text: str, source: str = "(top level)") -> Any:
    """One YAML document from text, or FieldError; a syntax error names `source` and the line."""
    try:
        loader = _StrictLoader(text, source)
    except yaml.YAMLError as error:  # the reader refuses control characters up front
        raise FieldError(source, f"not valid YAML: {error}") from None
    try:
        return loader.get_single_data()
    except yaml.YAMLError as error:
        raise FieldError(source, f"not valid YAML: {error}") from None
    finally:
        loader.dispose()


def load_yaml_file(path: str | os.PathLike[str]) -> Any:
    """Read and parse a YAML file of at most MAX_BYTES of UTF-8, or FieldError naming the file or key."""
    name = os.fspath(path)
    try:
        with open(path, "rb") as handle:
            data = handle.read(MAX_BYTES + 1)
    except OSError as error:
        raise FieldError(name, f"cannot read the config file: {error.strerror}") from None
    if len(data) > MAX_BYTES:
        raise FieldError(name, f"the file is larger than {MAX_BYTES // 1024} KiB; a config is a few hundred bytes")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as error:
        raise FieldError(name, f"not UTF-8 text (invalid byte at offset {error.start})") from None
    return parse_yaml(text, name)
