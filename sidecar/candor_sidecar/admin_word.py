"""The admin word (maint, drain) this pod's agent said last, kept where the next sidecar of the pod finds it.

HAProxy keeps a server in MAINT or DRAIN after its agent says so, until an answer says `ready`. But
`ready` also cancels a MAINT or DRAIN that an operator set through HAProxy's runtime API, so the agent
says it only to lift a state it set itself: after the maintenance annotation goes, or after a restart when
the sidecar before it in this pod said maint or drain.

The file lives in the control socket's directory (an emptyDir mounted into the sidecar container alone,
which outlives container restarts like the state directory does), so no app process can plant or forge
it. A sidecar run without a control socket keeps it in the state directory instead, which every process of
the pod can write; either way it is handled as hostile: never followed through a symlink, never opened
unless it is a regular file (a FIFO would block the read forever), at most MAX_BYTES read, and written
to a fresh temporary file (O_EXCL|O_NOFOLLOW, a random name) renamed over it, so nothing planted under
any name makes the sidecar write outside the directory. The name is not a journal name, so the tracer's
reader ignores it.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import stat

log = logging.getLogger("candor.sidecar.agent")

FILE_NAME = "agent-admin-word"
ADMIN_WORDS = frozenset({"maint", "drain"})
MAX_BYTES = 64
_DIRECTORY = os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC
# O_NONBLOCK: should a FIFO replace the file between the check and the open, opening it does not wait.
_READ = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC
_CREATE = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC


def read_admin_word(directory: str) -> str | None:
    """The admin word a sidecar of this pod said and has not lifted yet, or None."""
    try:
        dir_fd = os.open(directory, _DIRECTORY)
    except OSError:
        return None
    try:
        return _read(dir_fd, directory)
    finally:
        os.close(dir_fd)


def _read(dir_fd: int, directory: str) -> str | None:
    path = os.path.join(directory, FILE_NAME)
    try:
        seen = os.stat(FILE_NAME, dir_fd=dir_fd, follow_symlinks=False)
    except FileNotFoundError:
        return None
    except OSError as error:
        log.warning("ignoring %s: %s", path, error)
        return None
    if not stat.S_ISREG(seen.st_mode) or seen.st_size > MAX_BYTES:
        log.warning("ignoring %s: not a regular file of at most %d bytes", path, MAX_BYTES)
        return None
    try:
        fd = os.open(FILE_NAME, _READ, dir_fd=dir_fd)
    except OSError as error:  # replaced in between (a symlink: ELOOP), or removed
        if error.errno != errno.ENOENT:
            log.warning("ignoring %s: %s", path, error)
        return None
    try:
        opened = os.fstat(fd)
        if (opened.st_dev, opened.st_ino) != (seen.st_dev, seen.st_ino) or not stat.S_ISREG(opened.st_mode):
            log.warning("ignoring %s: replaced while it was being opened", path)
            return None
        data = os.read(fd, MAX_BYTES + 1)
    except OSError as error:
        log.warning("ignoring %s: %s", path, error)
        return None
    finally:
        os.close(fd)
    word = data.decode("ascii", "replace").strip()
    return word if word in ADMIN_WORDS else None


def remember_admin_word(directory: str, word: str | None) -> None:
    """Record `word` (maint or drain), or forget it (None). A failure is logged: the agent still answers."""
    path = os.path.join(directory, FILE_NAME)
    try:
        dir_fd = os.open(directory, _DIRECTORY)
    except OSError as error:
        log.warning("cannot record the agent's admin word in %s: %s", path, error)
        return
    temp: str | None = None
    try:
        if word is None:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(FILE_NAME, dir_fd=dir_fd)  # removes the name, whatever it is, never what it points to
            return
        for _ in range(8):  # a name somebody planted is skipped, never opened
            candidate = f".{FILE_NAME}.{os.urandom(8).hex()}.tmp"
            try:
                fd = os.open(candidate, _CREATE, 0o600, dir_fd=dir_fd)
            except FileExistsError:
                continue
            temp = candidate
            break
        else:
            raise OSError(errno.EEXIST, "no free temporary name")
        try:
            os.write(fd, (word + "\n").encode("ascii"))
        finally:
            os.close(fd)
        # A reader sees the old word or the new one, never half of it; rename replaces a planted symlink or
        # FIFO at the name itself, never what it points to.
        os.replace(temp, FILE_NAME, src_dir_fd=dir_fd, dst_dir_fd=dir_fd)
        temp = None
    except OSError as error:
        log.warning("cannot record the agent's admin word in %s: %s", path, error)
    finally:
        if temp is not None:
            with contextlib.suppress(OSError):
                os.unlink(temp, dir_fd=dir_fd)
        os.close(dir_fd)
