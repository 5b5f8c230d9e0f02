"""How an error message shows a bad value: its type and a bounded repr.

Config files and policies come from users and may hold megabytes in one value (or a YAML alias
bomb); an error message must stay one readable line whatever was given.
"""

from __future__ import annotations

import reprlib

_REPR = reprlib.Repr()
_REPR.maxstring = 60
_REPR.maxother = 60
_REPR.maxlist = 4
_REPR.maxdict = 4
_REPR.maxlevel = 2


def show(value: object) -> str:
    """`str 'abc'`, `int 5`, `list [1, 2, 3, 4, ...]`: never longer than a line."""
    return f"{type(value).__name__} {_REPR.repr(value)}"
