"""The agent's memory of a maint or drain it said, kept in the state directory across sidecar restarts."""

from __future__ import annotations

import logging
import os
from pathlib import Path

import pytest

from candor_sidecar.admin_word import FILE_NAME, read_admin_word, remember_admin_word
from candor_tracer.journal.reader import read_totals


def test_a_remembered_word_is_read_back_and_forgotten(tmp_path: Path) -> None:
    assert read_admin_word(str(tmp_path)) is None
    remember_admin_word(str(tmp_path), "maint")
    assert read_admin_word(str(tmp_path)) == "maint"
    remember_admin_word(str(tmp_path), "drain")
    assert read_admin_word(str(tmp_path)) == "drain"
    remember_admin_word(str(tmp_path), None)
    assert read_admin_word(str(tmp_path)) is None
    assert os.listdir(tmp_path) == []  # no temporary file left behind


def test_garbage_in_the_file_is_no_admin_word(tmp_path: Path) -> None:
    (tmp_path / FILE_NAME).write_bytes(b"\xffready up\n")
    assert read_admin_word(str(tmp_path)) is None


def test_an_unwritable_state_directory_is_logged_not_raised(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    missing = tmp_path / "not-there"
    with caplog.at_level(logging.WARNING, logger="candor.sidecar.agent"):
        remember_admin_word(str(missing), "maint")
    assert "cannot record the agent's admin word" in caplog.text
    assert read_admin_word(str(missing)) is None


def test_the_tracer_reader_ignores_the_file(tmp_path: Path) -> None:
    remember_admin_word(str(tmp_path), "maint")
    snapshot = read_totals(tmp_path)
    assert (snapshot.series, snapshot.writers, snapshot.skipped) == ((), (), ())
