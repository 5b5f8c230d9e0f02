"""The sidecar container's termination message file, where each drain's summary is left for the kubelet to copy
into the pod's status when the container exits (candor_sidecar.drain.summary says why and what).

Written only into a file that exists: the kubelet creates it and mounts it over `terminationMessagePath` before
the container starts, so outside Kubernetes (a sidecar run by hand, as root, on a developer's machine) nothing is
created in /dev. It is a bind mount, so it cannot be replaced by a rename: the summary is written over the start
of the file and the file cut after it, so a process stopped in between leaves a whole summary on the first line
(the reader takes that line). A file that cannot be written is said once, at debug level: it costs the pod its
Event, never the sidecar its drain.
"""

from __future__ import annotations

import errno
import logging
import os
import stat

log = logging.getLogger("candor.sidecar")


class TerminationMessage:
    """`path`: the container's termination message file (None: leave no message)."""

    def __init__(self, path: str | None) -> None:
        self.path = path
        self._said = False  # a failure is logged once

    def write(self, text: str) -> bool:
        """Leave `text` as the termination message; whether it was written."""
        if self.path is None:
            return False
        data = text.encode()
        try:
            # O_NONBLOCK: a FIFO or device at that path must not hold the event loop.
            descriptor = os.open(self.path, os.O_WRONLY | os.O_CLOEXEC | os.O_NOCTTY | os.O_NONBLOCK)
            try:
                if not stat.S_ISREG(os.fstat(descriptor).st_mode):
                    raise OSError(errno.EINVAL, "not a regular file")
                os.pwrite(descriptor, data, 0)
                os.ftruncate(descriptor, len(data))
            finally:
                os.close(descriptor)
        except OSError as error:
            if not self._said:
                self._said = True
                log.debug("no termination message written to %s (%s): the pod gets no Drained Event", self.path,
                          error.strerror or error)
            return False
        log.debug("drain summary left in %s: %s", self.path, text.strip())
        return True
