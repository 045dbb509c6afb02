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

from mailbeacon.model.hit import Hit
from mailbeacon.model.tokens import Kind
from mailbeacon.storage.schema import installation

log = logging.getLogger("mailbeacon.spool")
_text = json.encoder.encode_basestring_ascii  # a JSON string literal, quotes included
FILE_HITS = 10_000  # a new file after this many hits keeps each replay transaction small
_MARK = "spool:"
MARK_DAYS = 1.0  # a loaded file's mark matters only until its file is gone; then purged
SET_ASIDE = "set-aside"  # subfolder for lines that are not hits (never named hits-*)
_LOGGED_LINES = 10  # bad lines logged one by one per file; the rest counted
LAG_LOG_SECONDS = 10.0  # how often the loader logs its lag
LAG_WARN_SECONDS = 30.0  # a lag this long is logged as a warning


class Spool:
    """Journal files in one folder: `hits-<pid>-<random>.open` while a process appends
    to it, `.jsonl` once closed, `.replaying-<pid>` while a process loads it. A name is
    never reused, so the mark of a loaded file can never hide a newer one.

    The open file stays open between appends: should the folder be removed meanwhile,
    its lines are still readable through the descriptor and are written again to a new
    file when it is closed. A write that fails halfway is cut back to the last complete
    line; a loader sets aside any line that is not a hit and loads the others."""

    def __init__(self, folder: Path, fsync: bool = False) -> None:
        self.folder = folder
        self._fsync = fsync
        self._lock = threading.Lock()
        self._file: Path | None = None
        self._fd: int | None = None
        self._size = 0  # bytes of complete lines in the current file
        self._count = 0
        self._opened = 0.0  # time.monotonic() when the current file was started
        self._write = os.write  # tests put a failing write here (a full disk)
        self._purged = 0.0  # time.monotonic() of the last purge of old marks
        self.set_aside = 0  # lines that were not hits, set aside while loading
        self.rescued = 0  # hits written again after their open file was removed
        # The loader's lag: seconds since the oldest hit not yet in the database was
        # made, as last measured by `lag()` (0 when all is loaded). For metrics.
        self.lag_seconds = 0.0
        self.loaded = 0  # hits loaded by this process
        self._reported = (time.monotonic(), 0)  # (when, loaded) at the last lag log line

    def append(self, hits: Sequence[Hit]) -> None:
        """Write hits to the current journal file, whole lines or nothing; raises
        OSError if the disk fails (the file is then as it was before the call)."""
        data = "".join([_line(h) for h in hits]).encode("utf-8")
        with self._lock:
            if self._fd is None or self._count >= FILE_HITS:
                self._close()
                self._open()
            assert self._fd is not None
            try:
                view = memoryview(data)
                while view:
                    view = view[self._write(self._fd, view):]
                if self._fsync:
                    os.fsync(self._fd)
            except OSError as exc:
                self._cut_back(exc)
                raise
            self._size += len(data)
            self._count += len(hits)

    def _open(self) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        path = self.folder / f"hits-{os.getpid()}-{secrets.token_hex(8)}.open"
        # Read as well as write: the lines are read back should the file be removed.
        self._fd = os.open(path, os.O_RDWR | os.O_APPEND | os.O_CREAT | os.O_EXCL, 0o600)
        self._file, self._size, self._count = path, 0, 0
        self._opened = time.monotonic()

    def _cut_back(self, exc: OSError) -> None:
        """After a failed write: no partial line is left behind (the next line would be
        glued to it); if even that fails, the file is closed as it is and its loader
        sets the torn line aside."""
        assert self._fd is not None and self._file is not None
        try:
            os.ftruncate(self._fd, self._size)
            log.error("journal write to %s failed (%s): cut back to its last complete "
                      "line (byte %d)", self._file.name, exc, self._size)
        except OSError as failure:
            log.error("journal write to %s failed (%s) and could not be cut back (%s): "
                      "the file is closed; its loader sets the torn line aside",
                      self._file.name, exc, failure)
            with contextlib.suppress(OSError):
                self._close()

    def close_if_older(self, seconds: float) -> None:
        """Hand the current file to the loader once it is `seconds` old: another process
        loads only closed files, so this bounds how late an event appears."""
        with self._lock:
            if self._fd is not None and time.monotonic() - self._opened >= seconds:
                self._close()

    def _close(self) -> None:
        """Rename the current file to .jsonl. If it was removed (the folder deleted),
        its lines go to a new file first; if that fails too, the file stays open and
        this raises, to be tried again at the next close."""
        fd, path = self._fd, self._file
        if fd is None or path is None:
            return
        try:
            removed = os.fstat(fd).st_nlink == 0
            if not removed:
                path.rename(path.with_suffix(".jsonl"))
        except FileNotFoundError:
            removed = True
        if removed:
            self._rescue(fd, path)
        self._fd = self._file = None
        os.close(fd)

    def _rescue(self, fd: int, path: Path) -> None:
        data = bytearray()
        while len(data) < self._size:
            chunk = os.pread(fd, self._size - len(data), len(data))
            if not chunk:
                break
            data += chunk
        if not data:
            return
        self.folder.mkdir(parents=True, exist_ok=True)
        again = self.folder / f"hits-{os.getpid()}-{secrets.token_hex(8)}.open"
        with open(again, "xb") as out:
            out.write(data)
            out.flush()
            if self._fsync:
                os.fsync(out.fileno())
        again.rename(again.with_suffix(".jsonl"))
        self.rescued += self._count
        log.warning("journal file %s was removed while open: its %d hits were written "
                    "again to %s", path.name, self._count, again.with_suffix(".jsonl").name)

    def pending(self) -> bool:
        """Files to load, or an open file that was removed (to write again at once)."""
        file = self._file
        if file is not None and not file.exists():
            return True
        return self.folder.is_dir() and any(self.folder.glob("hits-*"))

    def lag(self) -> float:
        """Seconds since the oldest hit still waiting in the journal was made: the first
        line of each waiting file, open ones included (any process can measure it)."""
        oldest: int | None = None
        with contextlib.suppress(OSError):  # the folder removed meanwhile: nothing waits
            for path in self.folder.glob("hits-*"):
                first = _first_ts(path)
                if first is not None and (oldest is None or first < oldest):
                    oldest = first
        self.lag_seconds = 0.0 if oldest is None else max(
            0.0, time.time() - oldest / 1_000_000)
        return self.lag_seconds

    def report_lag(self, every: float = LAG_LOG_SECONDS) -> None:
        """Log the lag and the loading rate, at most once per `every` seconds: info
        while the loader keeps up, a warning once it is LAG_WARN_SECONDS behind."""
        now = time.monotonic()
        then, loaded_then = self._reported
        if now - then < every:
            return
        lag = self.lag()
        self._reported = (now, self.loaded)
        rate = (self.loaded - loaded_then) / (now - then)
        if lag or rate:
            log.log(logging.WARNING if lag >= LAG_WARN_SECONDS else logging.INFO,
                    "journal loader: oldest unloaded hit %.1f s old, %.0f hits/s loaded",
                    lag, rate)

    def replay(self, commit: Callable[[Connection, list[Hit]], object],
               transaction: Callable[[], object]) -> int:
        """Load every closed journal file; returns the number of hits loaded.

        `transaction()` gives a context manager yielding a connection (db.write).
        """
        with self._lock:
            self._close()  # new hits start a new file
        replayed = 0
        if self.folder.is_dir():
            for path in self.folder.glob("hits-*.open"):  # a crashed process's last file
                if not _alive(path.name):
                    with contextlib.suppress(FileNotFoundError):
                        path.rename(path.with_suffix(".jsonl"))
            for path in sorted(self.folder.glob("hits-*")):
                claimed = self._claim(path)
                if claimed is not None:
                    replayed += self._load(claimed, commit, transaction)
        if time.monotonic() - self._purged >= 3600 or not self._purged:
            self._purge_marks(transaction)
        return replayed

    def _load(self, claimed: Path, commit: Callable[[Connection, list[Hit]], object],
              transaction: Callable[[], object]) -> int:
        base = claimed.name.split(".")[0]
        mark = _MARK + base
        hits = self._read(claimed)
        loaded = 0
        with transaction() as conn:  # type: ignore[attr-defined]
            done = conn.execute(select(installation.c.name)
                                .where(installation.c.name == mark)).first()
            if not done:
                commit(conn, hits)
                conn.execute(installation.insert().values(name=mark, value=_loaded_now()))
                loaded = len(hits)
        claimed.unlink()
        self.loaded += loaded
        log.debug("loaded %d journaled hits from %s", len(hits), claimed.name)
        return loaded

    def _read(self, path: Path) -> list[Hit]:
        """Every hit of a file; each line that is not one (torn by a failed write or a
        crash, or garbage) is logged with its offset and copied to set-aside/."""
        hits: list[Hit] = []
        bad: list[bytes] = []
        offset = 0
        for raw in path.read_bytes().splitlines(keepends=True):
            line = raw.strip()
            if line:
                try:
                    hits.append(_hit(line.decode("utf-8")))
                except (ValueError, TypeError, KeyError, IndexError) as exc:
                    if len(bad) < _LOGGED_LINES:
                        log.error("journal %s: the line at byte %d is not a hit (%s): set "
                                  "aside", path.name, offset, _reason(exc))
                    bad.append(b"%d " % offset + raw.rstrip(b"\r\n") + b"\n")
            offset += len(raw)
        if bad:
            aside = self.folder / SET_ASIDE / (path.name.split(".")[0] + ".lines")
            aside.parent.mkdir(exist_ok=True)
            # Written whole: a file read again (its load failed) writes the same lines.
            with open(aside, "wb") as out:
                out.writelines(bad)
            self.set_aside += len(bad)
            log.error("journal %s: %d line(s) set aside in %s (each prefixed by its byte "
                      "offset); its %d hits load", path.name, len(bad), aside, len(hits))
        return hits

    def _purge_marks(self, transaction: Callable[[], object]) -> None:
        """Marks of loaded files older than a day go: a mark guards only against loading
        a file twice when a crash came between its commit and its removal."""
        cutoff = _loaded_now(-MARK_DAYS * 86400)
        with transaction() as conn:  # type: ignore[attr-defined]
            marks = installation.c.name.like(_MARK + "%")
            # Marks from before their time was kept: their day starts now.
            conn.execute(installation.update().where(marks, installation.c.value == "replayed")
                         .values(value=_loaded_now()))
            conn.execute(installation.delete().where(marks, installation.c.value < cutoff))
        self._purged = time.monotonic()

    def _claim(self, path: Path) -> Path | None:
        """Rename a file to ours atomically (two processes never load one file). A file
        this process claimed before and failed to load (the database was away) is
        taken again."""
        base, _, state = path.name.partition(".")
        if state == f"replaying-{os.getpid()}":
            return path
        if state == "jsonl" or (state.startswith("replaying-") and not _alive(
                "x-" + state.removeprefix("replaying-"))):
            claimed = path.with_name(f"{base}.replaying-{os.getpid()}")
            try:
                path.rename(claimed)
            except FileNotFoundError:
                return None
            return claimed
        return None


def _loaded_now(shift: float = 0.0) -> str:
    """A mark's value: `loaded <epoch seconds>`, ten digits until 2286, so marks compare
    as text."""
    return f"loaded {int(time.time() + shift):010d}"


def _reason(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {str(exc)[:200]}"


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


def _first_ts(path: Path) -> int | None:
    """The time of a journal file's first hit; None if it is gone or has none yet."""
    try:
        with open(path, "rb") as file:
            head = file.read(65536)
    except OSError:
        return None
    line, newline, _ = head.partition(b"\n")
    try:
        return _hit(line.decode("utf-8")).ts if newline else None
    except (ValueError, TypeError, KeyError, IndexError):
        return None


def _line(hit: Hit) -> str:
    """One hit as a JSON array in the order of Hit's fields. Every journaled hit takes
    this path before its answer: the strings go through json's C string encoder, the
    rest is formatted directly, several times cheaper than json.dumps of an object."""
    return (f"[{int(hit.kind)},{_text(hit.delivery_id)},{int(hit.ts)},{_text(hit.ip)},"
            f"{_text(hit.user_agent)},{_text(hit.method)},{_text(hit.url)},"
            f"{int(hit.link_index)},{_text(hit.scope)}]\n")


def _hit(line: str) -> Hit:
    """The hit of one line; ValueError or TypeError when the line is not one."""
    data = json.loads(line)
    if isinstance(data, dict):  # the earlier format: one object per hit
        data["kind"] = Kind(data["kind"])
        hit = Hit(**data)
    else:
        kind, *rest = data
        hit = Hit(Kind(kind), *rest)
    for value, wanted in zip(hit[1:], _FIELD_TYPES, strict=True):
        if type(value) is not wanted:
            raise TypeError(f"{type(value).__name__} where {wanted.__name__} belongs")
    return hit


_FIELD_TYPES = (str, int, str, str, str, str, int, str)  # Hit's fields after kind
