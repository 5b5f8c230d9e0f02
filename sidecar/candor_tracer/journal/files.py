"""Opening files in the shared state directory, which any process of the pod may write.

A name there can be a symbolic link (to another journal, or to a device), a FIFO, a directory or a file
of any size and mode. So nothing is opened through a link, nothing blocks (O_NONBLOCK: a FIFO would
wait for a writer forever), and only regular files are read. Running out of descriptors is not a
property of the file: it is re-raised, so the caller never mistakes it for "this file is bad".
"""

from __future__ import annotations

import errno
import os
import stat
from dataclasses import dataclass
from pathlib import Path

SAFE_FLAGS = os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC
EXHAUSTION_ERRNOS = frozenset({errno.EMFILE, errno.ENFILE})


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
