"""The first use of a domain's signing key makes one key, even when posts race for it."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor

from mailbeacon.domains.domain import add_domain
from mailbeacon.storage.db import Database
from mailbeacon.webhooks.store import signing_key


def test_first_uses_at_once_agree(db: Database) -> None:
    for n in range(5):
        add_domain(db, f"d{n}.example.com")
    for n in range(5):
        start = threading.Barrier(8)

        def first_use(_: int, name: str = f"d{n}.example.com",
                      start: threading.Barrier = start) -> str:
            start.wait()
            return signing_key(db, name)

        with ThreadPoolExecutor(8) as pool:
            keys = set(pool.map(first_use, range(8)))
        assert keys == {signing_key(db, f"d{n}.example.com")}  # one key, the stored one
