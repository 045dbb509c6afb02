"""The outage spool: hits that could not be committed wait here, on local disk.

When the database is unreachable, the recorder appends each batch to a journal file
(one JSON line per hit, written before the request is answered: it survives a process
crash like SQLite's WAL with synchronous=NORMAL) and answers as usual. Once the database
is back, each file is replayed in one transaction that also records the file's name, so
a replay interrupted by a crash is never applied twice: none lost, none doubled.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import secrets
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path

from sqlalchemy import Connection, select

from mailbeacon.storage.schema import installation
from mailbeacon.track.hits import Hit
from mailbeacon.track.tokens import Kind

log = logging.getLogger("mailbeacon.spool")
_text = json.encoder.encode_basestring_ascii  # a JSON string literal, quotes included
FILE_HITS = 10_000  # a new file after this many hits keeps each replay transaction small
_MARK = "spool:"


class Spool:
    """Journal files in one folder: `hits-<pid>-<random>.open` while a process appends
    to it, `.jsonl` once closed, `.replaying-<pid>` while a process loads it. A name is
    never reused, so the mark of a loaded file can never hide a newer one."""

    def __init__(self, folder: Path, fsync: bool = False) -> None:
        self.folder = folder
        self._fsync = fsync
        self._lock = threading.Lock()
        self._file: Path | None = None
        self._count = 0
        self._opened = 0.0  # time.monotonic() when the current file was started

    def append(self, hits: Sequence[Hit]) -> None:
        """Write hits to the current journal file; raises OSError if the disk fails."""
        lines = "".join([_line(h) for h in hits])
        with self._lock:
            if self._file is None or self._count >= FILE_HITS:
                self._close()
                self.folder.mkdir(parents=True, exist_ok=True)
                self._file = self.folder / f"hits-{os.getpid()}-{secrets.token_hex(8)}.open"
                self._count = 0
                self._opened = time.monotonic()
            with open(self._file, "a", encoding="utf-8") as out:
                out.write(lines)
                out.flush()
                if self._fsync:
                    os.fsync(out.fileno())
            self._count += len(hits)

    def close_if_older(self, seconds: float) -> None:
        """Hand the current file to the loader once it is `seconds` old: another process
        loads only closed files, so this bounds how late an event appears."""
        with self._lock:
            if self._file is not None and time.monotonic() - self._opened >= seconds:
                self._close()

    def _close(self) -> None:
        if self._file is not None:
            self._file.rename(self._file.with_suffix(".jsonl"))
            self._file = None

    def pending(self) -> bool:
        return self.folder.is_dir() and any(self.folder.glob("hits-*"))

    def replay(self, commit: Callable[[Connection, list[Hit]], object],
               transaction: Callable[[], object]) -> int:
        """Load every closed journal file; returns the number of hits loaded.

        `transaction()` gives a context manager yielding a connection (db.write).
        """
        with self._lock:
            if self._file is not None and self._file.exists():
                self._close()  # new hits start a new file
        if not self.folder.is_dir():
            return 0
        for path in self.folder.glob("hits-*.open"):  # a crashed process's last file
            if not _alive(path.name):
                with contextlib.suppress(FileNotFoundError):
                    path.rename(path.with_suffix(".jsonl"))
        replayed = 0
        for path in sorted(self.folder.glob("hits-*")):
            claimed = self._claim(path)
            if claimed is None:
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
            log.info("loaded %d journaled hits from %s", len(hits), claimed.name)
        return replayed

    def _claim(self, path: Path) -> Path | None:
        """Rename a file to ours atomically (two processes never load one file)."""
        base, _, state = path.name.partition(".")
        if state == "jsonl" or (state.startswith("replaying-") and not _alive(
                "x-" + state.removeprefix("replaying-"))):
            claimed = path.with_name(f"{base}.replaying-{os.getpid()}")
            try:
                path.rename(claimed)
            except FileNotFoundError:
                return None
            return claimed
        return None


def _alive(name: str) -> bool:
    """Whether the process whose pid is the second part of `name` still runs."""
    try:
        pid = int(name.split("-")[1].split(".")[0])
        os.kill(pid, 0)
    except (IndexError, ValueError, ProcessLookupError):
        return False
    except PermissionError:
        return True
    return True


def _line(hit: Hit) -> str:
    """One hit as a JSON array in the order of Hit's fields. Every journaled hit takes
    this path before its answer: the strings go through json's C string encoder, the
    rest is formatted directly, several times cheaper than json.dumps of an object."""
    return (f"[{int(hit.kind)},{_text(hit.delivery_id)},{int(hit.ts)},{_text(hit.ip)},"
            f"{_text(hit.user_agent)},{_text(hit.method)},{_text(hit.url)},"
            f"{int(hit.link_index)},{_text(hit.scope)}]\n")


def _hit(line: str) -> Hit:
    data = json.loads(line)
    if isinstance(data, dict):  # the earlier format: one object per hit
        data["kind"] = Kind(data["kind"])
        return Hit(**data)
    kind, *rest = data
    return Hit(Kind(kind), *rest)
