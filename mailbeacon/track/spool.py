"""The outage spool: hits that could not be committed wait here, on local disk.

When the database is unreachable, the recorder appends each batch to a journal file
(one JSON line per hit, written before the request is answered: it survives a process
crash like SQLite's WAL with synchronous=NORMAL) and answers as usual. Once the database
is back, each file is replayed in one transaction that also records the file's name, so
a replay interrupted by a crash is never applied twice: none lost, none doubled.
"""

from __future__ import annotations

import json
import logging
import os
import secrets
import threading
from collections.abc import Callable, Sequence
from dataclasses import asdict
from pathlib import Path

from sqlalchemy import Connection, select

from mailbeacon.storage.schema import installation
from mailbeacon.track.hits import Hit
from mailbeacon.track.tokens import Kind

log = logging.getLogger("mailbeacon.spool")
FILE_HITS = 10_000  # a new file after this many hits keeps each replay transaction small
_MARK = "spool:"


class Spool:
    def __init__(self, folder: Path, fsync: bool = False) -> None:
        self.folder = folder
        self._fsync = fsync
        self._lock = threading.Lock()
        self._file: Path | None = None
        self._count = 0

    def append(self, hits: Sequence[Hit]) -> None:
        """Write hits to the current journal file; raises OSError if the disk fails."""
        lines = "".join(json.dumps({**asdict(h), "kind": int(h.kind)}) + "\n" for h in hits)
        with self._lock:
            if self._file is None or self._count >= FILE_HITS:
                self.folder.mkdir(parents=True, exist_ok=True)
                self._file = self.folder / f"hits-{os.getpid()}-{secrets.token_hex(6)}.jsonl"
                self._count = 0
            with open(self._file, "a", encoding="utf-8") as out:
                out.write(lines)
                out.flush()
                if self._fsync:
                    os.fsync(out.fileno())
            self._count += len(hits)

    def pending(self) -> bool:
        return self.folder.is_dir() and any(self.folder.glob("hits-*.jsonl*"))

    def replay(self, commit: Callable[[Connection, list[Hit]], None],
               transaction: Callable[[], object]) -> int:
        """Apply every closed journal file; returns the number of hits replayed.

        `transaction()` gives a context manager yielding a connection (db.write).
        """
        with self._lock:
            if self._file is not None and self._file.exists():
                self._file = None  # close the current file: new hits start a new one
        replayed = 0
        for path in sorted(self.folder.glob("hits-*.jsonl*")):
            claimed = path if path.name.endswith(".replaying") else \
                path.with_name(path.name + ".replaying")
            if claimed != path:
                try:
                    path.rename(claimed)  # atomic: two processes never take one file
                except FileNotFoundError:
                    continue
            mark = _MARK + claimed.name.split(".")[0]
            hits = [_hit(line) for line in claimed.read_text("utf-8").splitlines()
                    if line.strip()]
            with transaction() as conn:  # type: ignore[attr-defined]
                done = conn.execute(select(installation.c.name)
                                    .where(installation.c.name == mark)).first()
                if not done:
                    commit(conn, hits)
                    conn.execute(installation.insert().values(name=mark, value="replayed"))
                    replayed += len(hits)
            claimed.unlink()
            log.info("replayed %d spooled hits from %s", len(hits), claimed.name)
        return replayed


def _hit(line: str) -> Hit:
    data = json.loads(line)
    data["kind"] = Kind(data["kind"])
    return Hit(**data)
