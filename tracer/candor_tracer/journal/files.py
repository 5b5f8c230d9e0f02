"""Finding and opening files in the shared state directory, which any process of the pod may write.

A name there can be a symbolic link (to another journal, or to a device), a FIFO, a directory or a file
of any size and mode. So nothing is opened through a link, nothing blocks (O_NONBLOCK: a FIFO would
wait for a writer forever), and only regular files are read. Running out of descriptors is not a
property of the file: it is re-raised, so the caller never mistakes it for "this file is bad". What is
wrong with a file is handed to the caller's `skip(path, problem)`, which keeps the record (journal.skips).
"""

from __future__ import annotations

import errno
import fcntl
import os
import stat
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from candor_tracer.journal.format import HEADER, JOURNAL_NAME, unpack_header

SAFE_FLAGS = os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC
EXHAUSTION_ERRNOS = frozenset({errno.EMFILE, errno.ENFILE})
# A dead writer's temporary file (killed between creating and publishing its journal) is removed once it
# is this old: younger ones may belong to a writer that has not taken its lock yet.
STALE_TEMP_SECONDS = 60.0


class NotARegularFile(OSError):
    """The name is a symbolic link, FIFO, socket, device or directory."""


def is_exhaustion(error: BaseException) -> bool:
    return isinstance(error, OSError) and error.errno in EXHAUSTION_ERRNOS


@dataclass
class OpenFile:
    path: Path
    fd: int
    writable: bool
    identity: tuple[int, int]  # (st_dev, st_ino): one file, however many names
    size: int


def open_regular(path: Path, write: bool = True) -> OpenFile | None:
    """Open a regular file without following a link or blocking; None when it has gone meanwhile.

    Read-write when allowed and `write`, else read-only. Raises NotARegularFile, or the OSError of the
    open (e.g. EACCES, ELOOP for a link, EMFILE).
    """
    fd = -1
    writable = False
    try:
        if write:
            try:
                fd, writable = os.open(path, os.O_RDWR | SAFE_FLAGS), True
            except PermissionError:
                pass
            except OSError as error:
                if error.errno not in (errno.EROFS, errno.ETXTBSY):
                    raise
        if fd < 0:
            fd = os.open(path, os.O_RDONLY | SAFE_FLAGS)
    except FileNotFoundError:
        return None
    except OSError as error:
        if error.errno == errno.ELOOP:
            raise NotARegularFile(errno.ELOOP, "a symbolic link (not followed)", str(path)) from None
        raise
    try:
        st = os.fstat(fd)
    except BaseException:
        os.close(fd)
        raise
    if not stat.S_ISREG(st.st_mode):
        os.close(fd)
        raise NotARegularFile(errno.EINVAL, f"not a regular file (mode {stat.filemode(st.st_mode)})", str(path))
    return OpenFile(path, fd, writable, (st.st_dev, st.st_ino), st.st_size)


def read_regular(path: Path, limit: int) -> bytes | None:
    """The bytes of a small regular file (at most `limit`, else ValueError); None when it does not exist."""
    opened = open_regular(path, write=False)
    if opened is None:
        return None
    try:
        if opened.size > limit:
            raise ValueError(f"{opened.size} bytes, more than the {limit} allowed")
        chunks = []
        total = 0
        while True:
            chunk = os.read(opened.fd, min(1 << 20, limit + 1 - total))
            if not chunk:
                break
            chunks.append(chunk)
            total += len(chunk)
            if total > limit:  # grew while we read
                raise ValueError(f"more than the {limit} bytes allowed")
        return b"".join(chunks)
    finally:
        os.close(opened.fd)


def writer_is_alive(fd: int) -> bool:
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    return False


def remove_stale_temp(entry: os.DirEntry[str]) -> None:
    """Remove a temporary file a writer or reader left when killed (unlocked and older than a minute)."""
    try:
        if entry.is_symlink() or not entry.is_file(follow_symlinks=False):
            return  # not one of ours
        if time.time() - entry.stat(follow_symlinks=False).st_mtime <= STALE_TEMP_SECONDS:
            return
        opened = open_regular(Path(entry.path))
        if opened is None:
            return
        try:
            if not writer_is_alive(opened.fd):
                os.unlink(entry.path)
        finally:
            os.close(opened.fd)
    except OSError as exc:
        if is_exhaustion(exc):
            raise


def list_entries(state_dir: Path) -> list[os.DirEntry[str]]:
    """The directory's entries by name. Raises OSError when it cannot be listed: that is not "empty"."""
    try:
        with os.scandir(state_dir) as it:
            return sorted(it, key=lambda entry: entry.name)
    except FileNotFoundError:
        return []  # no directory yet: nothing can be writing there


def open_journal(entry: os.DirEntry[str], skip: Callable[[Path, str], None]) -> OpenFile | None:
    """The journal under this name, opened; None (passed to `skip` when wrong) when there is none to read."""
    path = Path(entry.path)
    try:
        if entry.is_symlink():
            skip(path, "a symbolic link: journals are read under their own name only")
            return None
        if not entry.is_file(follow_symlinks=False):
            skip(path, "not a regular file")
            return None
        return open_regular(path)
    except NotARegularFile as exc:
        skip(path, exc.strerror or "not a regular file")
    except OSError as exc:
        if is_exhaustion(exc):
            raise
        skip(path, f"cannot open: {exc.strerror or exc}")
    return None


def named_by_its_writer(opened: OpenFile, skip: Callable[[Path, str], None]) -> bool:
    """Whether the file name carries the pid and start time its header does (a writer names it so).

    A second name of a journal (a link anyone can make) must not be the name it is read under, nor hide
    the real one: a name that does not match is skipped before the file counts as read.
    """
    try:
        header = unpack_header(os.pread(opened.fd, HEADER.size, 0))
    except Exception as exc:
        if is_exhaustion(exc):
            raise
        return True  # not a journal at all: the decode names the problem
    match = JOURNAL_NAME.match(opened.path.name)
    if match is not None and (int(match[1]), int(match[2])) == (header.pid, header.starttime):
        return True
    skip(opened.path, f"its header names pid {header.pid}, start {header.starttime}, not those of the file name")
    return False
