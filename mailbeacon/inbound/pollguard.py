"""What one mailbox poll may cost: bytes read and time taken (inbound/mailbox.py).

A hostile or broken server sent endless untagged lines (1.2 GB in 32 s) or a 300 MB
literal, or trickled a byte at a time under the per-read timeout. `PollGuard` counts
every byte a poll reads and cuts the connection at the poll's deadline or at shutdown.
"""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from dataclasses import dataclass

__all__ = ["Overrun", "PollGuard", "PollLimits"]


@dataclass(frozen=True)
class PollLimits:
    """What one poll may cost, whatever the server sends (docs/security.md)."""

    message_bytes: int = 32 * 2**20  # a larger message stays on the server, reported
    poll_bytes: int = 256 * 2**20  # messages read per poll; the rest wait for the next
    chatter_bytes: int = 4 * 2**20  # protocol lines besides messages, per poll
    seconds: float = 300.0  # no message is started after this; the session is cut
    # `timeout` seconds later, whatever it is doing


class Overrun(OSError):
    """The server sent more than a poll allows, or the poll ran out of time."""


class PollGuard:
    """Counts what the server sends in one poll and cuts the session at the deadline
    (a server trickling a byte at a time never trips the per-read timeout)."""

    def __init__(self, limits: PollLimits, grace: float,
                 stop: threading.Event | None) -> None:
        self.limits = limits
        self.chatter = 0
        self.messages = 0  # message bytes read so far
        self.in_message = False
        self.client: object = None  # the poplib / imaplib object, once it exists
        self.cut = False
        self._end = time.monotonic() + limits.seconds
        self._finished = threading.Event()
        watcher = threading.Thread(target=self._watch, args=(limits.seconds + grace, stop),
                                   name="mailbox-deadline", daemon=True)
        watcher.start()

    def _watch(self, seconds: float, stop: threading.Event | None) -> None:
        """Cut the session at the deadline, or at once when `stop` is set (shutdown)."""
        end = time.monotonic() + seconds
        while not self._finished.wait(min(0.25, max(end - time.monotonic(), 0))):
            if time.monotonic() >= end or (stop is not None and stop.is_set()):
                self._cut()
                return

    @property
    def late(self) -> bool:
        return time.monotonic() >= self._end

    def line(self, size: int) -> None:
        if self.in_message:
            self._message(size)
            return
        self.chatter += size
        if self.chatter > self.limits.chatter_bytes:
            raise Overrun(f"the server sent over {self.limits.chatter_bytes} bytes of "
                           "protocol lines in one poll")

    def literal(self, size: int) -> None:
        if size > self.limits.message_bytes:
            raise Overrun(f"the server sent a {size}-byte literal, over the "
                           f"{self.limits.message_bytes}-byte message limit")
        self._message(size)

    def _message(self, size: int) -> None:
        self.messages += size
        # Honest sizes are checked before each message; this stops a server that lies.
        if self.messages > self.limits.poll_bytes + self.limits.message_bytes:
            raise Overrun(f"the server sent over {self.limits.poll_bytes} message bytes "
                           "in one poll")

    def _cut(self) -> None:
        self.cut = True
        sock = getattr(self.client, "sock", None)
        if isinstance(sock, socket.socket):
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)  # the blocked read returns at once

    def close(self) -> None:
        self._finished.set()
