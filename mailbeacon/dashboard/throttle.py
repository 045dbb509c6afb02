"""The failed-login throttle of the dashboard.

Three limits, each counted before the password is hashed (mailbeacon/throttle.py):

- per user name and address: 5 attempts a minute;
- per address: 20 attempts a minute (an IPv6 address counts by its /64);
- per user name across all addresses: 10 attempts in 15 minutes, then each further one
  1 s after the one before, doubling up to 60 s, and at most 30 in 15 minutes. This one
  holds when the address changes with every try (a botnet, or a trusted proxy passing a
  rotating `X-Forwarded-For`).

A login that succeeds takes its own attempt back and clears its user name and address
pair, never the per-user count: a right password from one place does not give guesses
elsewhere back. Counted in each process (see docs/dashboard.md).
"""

from __future__ import annotations

import time

from mailbeacon.net.throttle import Checks, Limit, Throttle, address_key

PER_USER_AND_ADDRESS = Limit("login-user-ip", attempts=5, window=60.0)
PER_ADDRESS = Limit("login-ip", attempts=20, window=60.0)
PER_USER = Limit("login-user", attempts=30, window=900.0, free=10, delay=1.0, max_delay=60.0)


class LoginThrottle:
    """Login attempts per user name and client address."""

    def __init__(self, limits: tuple[Limit, Limit, Limit] = (
            PER_USER_AND_ADDRESS, PER_ADDRESS, PER_USER), max_keys: int = 10_000) -> None:
        self.per_user_and_address, self.per_address, self.per_user = limits
        self._throttle = Throttle(max_keys)

    def _checks(self, username: str, ip: str) -> Checks:
        name = username.strip().lower()
        address = address_key(ip)
        return [(self.per_user_and_address, f"{name}|{address}"),
                (self.per_address, address), (self.per_user, name)]

    def begin(self, username: str, ip: str, now: float | None = None) -> float:
        """Count an attempt and return 0, or return the seconds to wait (nothing counted).
        Pass the same `now` to `succeeded`."""
        return self._throttle.begin(self._checks(username, ip),
                                    time.monotonic() if now is None else now)

    def succeeded(self, username: str, ip: str, began: float) -> None:
        checks = self._checks(username, ip)
        self._throttle.succeeded(checks, began)
        self._throttle.forget(checks[:1])  # this user's typos from this address
