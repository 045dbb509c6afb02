"""Loopback ports for servers a test starts, safe when pytest-xdist runs workers at once.

A port picked by binding port 0 and bound again later is an ephemeral port: meanwhile the
kernel may hand it to any client connection, or to another worker that asked the same way.
So each worker takes ports from its own block below the ephemeral range (32768-60999 on
Linux), never the same one twice in a run while it is free to bind.
"""

from __future__ import annotations

import itertools
import os
import socket

_FIRST = 20000
_BLOCK = 600  # ports per worker: workers gw0..gw19 fit below 32768


def block(worker: str) -> range:
    """The ports of the pytest-xdist worker `worker` (gw0, gw1, ...; "" without xdist)."""
    digits = worker.removeprefix("gw")
    number = int(digits) % 20 if digits.isdigit() else 0
    return range(_FIRST + number * _BLOCK, _FIRST + (number + 1) * _BLOCK)


_mine = block(os.environ.get("PYTEST_XDIST_WORKER", ""))  # set by pytest-xdist
_candidates = itertools.cycle(_mine)


def bindable(port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


def free_port() -> int:
    """A loopback port nobody listens on, from this worker's own block."""
    for _ in range(_BLOCK):
        port = next(_candidates)
        if bindable(port):
            return port
    raise AssertionError(f"no free port in {_mine.start}-{_mine.stop - 1}")
