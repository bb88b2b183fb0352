"""The sockets this process holds open (Linux ``/proc``), to check options the code under test
set on them (``TCP_NODELAY``) when the server or client runs in the test's own process."""

from __future__ import annotations

import os
import socket
from collections.abc import Iterator

__all__ = ["sockets_of_this_process"]


def sockets_of_this_process() -> Iterator[socket.socket]:
    """A duplicate of every socket descriptor of this process; the caller closes each."""
    for fd in os.listdir("/proc/self/fd"):
        try:
            if not os.readlink(f"/proc/self/fd/{fd}").startswith("socket:"):
                continue
            sock = socket.socket(fileno=os.dup(int(fd)))
        except OSError:
            continue
        yield sock
