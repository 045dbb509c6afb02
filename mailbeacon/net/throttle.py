"""Counting attempts per key (an address, a user name) to slow down guessing.

An attempt is counted when it begins, before the slow check it guards (a password hash,
a key lookup), and taken back when it succeeds. So concurrent attempts cannot all slip
past the limit while the first ones are still being checked: what is counted is failures
plus attempts in flight. In memory, so each process counts on its own.

    PER_ADDRESS = Limit("ip", attempts=5, window=600)
    throttle = Throttle()
    checks = [(PER_ADDRESS, address_key(ip))]
    began = time.monotonic()
    if throttle.begin(checks, began) == 0:
        if check(...):
            throttle.succeeded(checks, began)
"""

from __future__ import annotations

import ipaddress
import threading
import time
from collections import OrderedDict, deque
from collections.abc import Sequence
from dataclasses import dataclass

_MAX_DOUBLINGS = 30  # 2**30 times any delay is past every cap, and floats stay finite


@dataclass(frozen=True)
class Limit:
    """At most `attempts` per key within `window` seconds. Once `free` attempts are in the
    window, each further one must also come `delay` seconds after the one before, that
    delay doubling with each attempt past `free`, up to `max_delay`."""

    name: str  # keeps the keys of different limits apart
    attempts: int
    window: float
    free: int | None = None  # None: all `attempts` are free of delay
    delay: float = 0.0
    max_delay: float = 0.0

    def wait(self, times: deque[float], now: float) -> float:
        """Seconds until the next attempt is allowed, given the attempts in the window."""
        if len(times) >= self.attempts:  # until enough of the oldest leave the window
            return max(0.0, times[-self.attempts] + self.window - now)
        free = self.attempts if self.free is None else self.free
        if self.delay > 0 and times and len(times) >= free:
            pause = self.delay * 2.0 ** min(len(times) - free, _MAX_DOUBLINGS)
            if self.max_delay:
                pause = min(pause, self.max_delay)
            return max(0.0, times[-1] + pause - now)
        return 0.0


Checks = Sequence[tuple[Limit, str]]


class Throttle:
    """Attempt times per (limit, key), pruned to each limit's window.

    At most `max_keys` keys are kept; past that the key whose last attempt is oldest is
    forgotten first, so a flood of new keys costs memory only up to that bound.
    Thread-safe: a check and its counting happen under one lock.
    """

    def __init__(self, max_keys: int = 10_000) -> None:
        self.max_keys = max_keys
        self._times: OrderedDict[str, deque[float]] = OrderedDict()
        self._lock = threading.Lock()

    def _window(self, limit: Limit, key: str, now: float) -> deque[float]:
        times = self._times.get(f"{limit.name}|{key}")
        if times is None:
            return deque()
        while times and times[0] <= now - limit.window:
            times.popleft()
        return times

    def _wait(self, checks: Checks, now: float) -> float:
        return max((limit.wait(self._window(limit, key, now), now) for limit, key in checks),
                   default=0.0)

    def retry_after(self, checks: Checks, now: float | None = None) -> float:
        """Seconds before an attempt would be allowed under every check; 0: now."""
        now = time.monotonic() if now is None else now
        with self._lock:
            return self._wait(checks, now)

    def exhausted(self, checks: Checks, now: float | None = None) -> bool:
        """Whether some check has all its attempts used (not merely a delay to wait)."""
        now = time.monotonic() if now is None else now
        with self._lock:
            return any(len(self._window(limit, key, now)) >= limit.attempts
                       for limit, key in checks)

    def begin(self, checks: Checks, now: float | None = None) -> float:
        """Count an attempt under every check if all allow it now, and return 0; else
        count nothing and return the seconds to wait. Pass the same `now` to
        `succeeded` to take the attempt back."""
        now = time.monotonic() if now is None else now
        with self._lock:
            wait = self._wait(checks, now)
            if wait > 0:
                return wait
            for limit, key in checks:
                name = f"{limit.name}|{key}"
                times = self._window(limit, key, now)
                times.append(now)
                self._times[name] = times
                self._times.move_to_end(name)
            while len(self._times) > self.max_keys:
                self._times.popitem(last=False)
            return 0.0

    def succeeded(self, checks: Checks, began: float) -> None:
        """Take back the attempt counted at `began`: it was not a failure."""
        with self._lock:
            for limit, key in checks:
                times = self._times.get(f"{limit.name}|{key}")
                if times is not None and began in times:
                    times.remove(began)

    def forget(self, checks: Checks) -> None:
        """Drop every attempt counted under these checks."""
        with self._lock:
            for limit, key in checks:
                self._times.pop(f"{limit.name}|{key}", None)


def address_key(ip: str) -> str:
    """The key of a client address: IPv4 as it is (also when mapped into IPv6), IPv6 by
    its /64, which one client usually holds whole and could rotate through."""
    try:
        address = ipaddress.ip_address(ip)
    except ValueError:
        return ip
    if isinstance(address, ipaddress.IPv6Address):
        if address.ipv4_mapped is not None:
            return str(address.ipv4_mapped)
        return str(ipaddress.IPv6Network((address, 64), strict=False))
    return str(address)
