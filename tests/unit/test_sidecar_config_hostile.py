"""Hostile sidecar config files: each exits 2 with one line naming the key, never a traceback, quickly."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from candor_sidecar.config import load_config
from candor_sidecar.field_error import FieldError
from candor_sidecar.strict_yaml import MAX_BYTES


def _laughs() -> bytes:
    levels = ['a: &l0 ["lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol"]']
    for level in range(1, 10):
        levels.append(f"{'b' * level}: &l{level} [{', '.join([f'*l{level - 1}'] * 10)}]")
    return ("\n".join(levels) + "\nmemory: {maxPercent: *l9}\n").encode()


def _laughs_in_the_value() -> bytes:
    anchors = ['&l0 ["lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol"]']
    anchors += [f"&l{n} [{', '.join([f'*l{n - 1}'] * 9)}]" for n in range(1, 9)]
    return f"memory:\n  maxPercent: [{', '.join(anchors)}]\n".encode()


# (name, file bytes, the key path the message must start with; None means the file itself)
HOSTILE: list[tuple[str, bytes, str | None]] = [
    ("billion laughs, aliases defined at the top", _laughs(), "b[0]"),
    ("billion laughs inside memory.maxPercent", _laughs_in_the_value(), "memory.maxPercent"),
    ("merge key alias", b"base: &b {port: 1}\nhttp:\n  <<: *b\n", "http"),
    ("invalid UTF-8", b"slowStart: \xff\xfe30s\n", None),
    ("UTF-16 file", "slowStart: 30s\n".encode("utf-16"), None),
    ("20,000-deep flow nesting", b"disk:\n  paths: " + b"[" * 20_000 + b"]" * 20_000 + b"\n", "disk.paths"),
    ("20,000-deep block nesting", b"disk:\n" + b"".join(b"  " * n + b"- \n" for n in range(200)), "disk"),
    ("file above the size cap", b"slowStart: " + b"x" * (MAX_BYTES + 10) + b"\n", None),
    ("duplicate key", b"memory: {maxPercent: 50}\nmemory: {maxPercent: 90}\n", "memory"),
    ("duplicate nested key", b"memory:\n  maxPercent: 50\n  maxPercent: 90\n", "memory.maxPercent"),
    ("bad listen address", b"http: {address: 'localhost:80'}\n", "http.address"),
    ("listen address not a string", b"agent: {address: [1, 2]}\n", "agent.address"),
    ("empty listen address", b"http: {address: ''}\n", "http.address"),
    ("integer beyond Python's digit limit", b"maxConn: " + b"9" * 5000 + b"\n", "maxConn"),
    ("python object tag", b"slowStart: !!python/object/apply:os.system ['true']\n", "slowStart"),
    ("unhashable key", b"? [a, b]\n: 1\n", None),
    ("two documents", b"slowStart: 1s\n---\nslowStart: 2s\n", None),
    ("NUL bytes", b"slowStart: 1s\x00\x00\n", None),
    ("NaN percentage", b"memory: {maxPercent: .nan}\n", "memory.maxPercent"),
    ("infinite percentage", b"disk: {maxPercent: .inf}\n", "disk.maxPercent"),
    ("900 KB duration", b"slowStart: '" + b"1" * 900_000 + b"s'\n", "slowStart"),
    ("900 KB unknown key", b"k" * 900_000 + b": 1\n", None),
    ("maxJobDuration below heartbeatTimeout", b"deadlock: {heartbeatTimeout: 60s, maxJobDuration: 30s}\n",
     "deadlock.maxJobDuration"),
    ("duration finer than a nanosecond", b"slowStart: 1.0000000001s\n", "slowStart"),
    ("a list at the top", b"- slowStart\n", "(top level)"),
    ("tab-indented", b"memory:\n\tmaxPercent: 5\n", None),
]


@pytest.mark.parametrize(("name", "data", "field"), HOSTILE, ids=[case[0] for case in HOSTILE])
def test_hostile_file_is_a_config_error_naming_the_key(tmp_path: Path, name: str, data: bytes,
                                                       field: str | None) -> None:
    path = tmp_path / "sidecar.yaml"
    path.write_bytes(data)
    with pytest.raises(FieldError) as raised:
        load_config(path)
    assert raised.value.field.startswith(field if field is not None else str(path)), raised.value
    assert len(str(raised.value)) < 400, "the message must not repr an unbounded value"


def test_the_command_exits_2_on_every_hostile_file_without_a_traceback(tmp_path: Path) -> None:
    script = (
        "import contextlib, io, json, sys\n"
        "from candor_sidecar.cli import main\n"
        "for path in sys.argv[1:]:\n"
        "    err = io.StringIO()\n"
        "    with contextlib.redirect_stderr(err):\n"
        "        try:\n"
        "            main(['--config', path])\n"
        "        except SystemExit as exit:\n"
        "            print(json.dumps([exit.code, err.getvalue().strip(), 'SystemExit']))\n"
        "        except BaseException as error:\n"
        "            print(json.dumps([None, err.getvalue().strip(), type(error).__name__]))\n"
    )
    paths = []
    for index, (_, data, _) in enumerate(HOSTILE):
        path = tmp_path / f"{index}.yaml"
        path.write_bytes(data)
        paths.append(str(path))
    result = subprocess.run([sys.executable, "-c", script, *paths], capture_output=True, text=True,
                            timeout=120, check=False)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert len(lines) == len(HOSTILE)
    for index, ((name, _, field), line) in enumerate(zip(HOSTILE, lines, strict=True)):
        status, output, exception = json.loads(line)
        assert (status, exception) == (2, "SystemExit"), (name, line)
        assert output.startswith("candor sidecar: invalid config: ") and "Traceback" not in output, (name, line)
        assert f"invalid config: {field if field is not None else paths[index] + ':'}" in output, (name, line)


@pytest.mark.parametrize("text", ["evaluationInterval: 100000us\n", "evaluationInterval: 0.1s\n",
                                  "evaluationInterval: 100ms\n"])
def test_the_minimum_is_exact_whatever_the_unit(tmp_path: Path, text: str) -> None:
    path = tmp_path / "sidecar.yaml"
    path.write_text(text)
    assert load_config(path).evaluation_interval == 0.1


@pytest.mark.parametrize("text", ["http: {address: '::'}\n", "http: {address: 127.0.0.1}\n"])
def test_ip_listen_addresses_are_accepted(tmp_path: Path, text: str) -> None:
    path = tmp_path / "sidecar.yaml"
    path.write_text(text)
    load_config(path)
