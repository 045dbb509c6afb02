"""Connections, transactions and the few statements that differ between backends.

SQLite (default) runs in WAL mode with a 10 s busy timeout; write transactions start with
BEGIN IMMEDIATE so two writers queue on the lock instead of failing halfway through.
PostgreSQL needs nothing special. Use `db.write()` for anything that changes data and
`db.read()` for queries.
"""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

from sqlalchemy import Connection, Engine, Table, create_engine, event
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import make_url

from mailbeacon.errors import ConfigError
from mailbeacon.model.clock import now_us
from mailbeacon.model.ids import id_from_parts, id_micros
from mailbeacon.storage.bulk import insert_rows, upsert_rows
from mailbeacon.storage.schema import event_tags, events

# Any constant works; it names the lock that serialises event-id allocation on PostgreSQL.
_EVENTS_LOCK = 0x6D61696C62656163
_MIGRATE_LOCK = _EVENTS_LOCK + 1




class Database:
    """One database, whichever backend; safe to share between threads."""

    def __init__(self, url: str) -> None:
        try:
            parsed = make_url(url)
        except Exception as exc:  # sqlalchemy raises ArgumentError with the URL inside
            raise ConfigError(f"database URL is not valid: {_redact(url)}") from exc
        self.url = url
        self.is_sqlite = parsed.get_backend_name() == "sqlite"
        if self.is_sqlite:
            if not parsed.database or parsed.database == ":memory:":
                # Each pooled connection would get its own empty database.
                raise ConfigError("SQLite needs a file: sqlite:///path/to/mailbeacon.db")
            if parsed.database:
                folder = os.path.dirname(os.path.abspath(parsed.database))
                if not os.path.isdir(folder):
                    raise ConfigError(f"folder of the SQLite database does not exist: {folder}")
            self._writer = self._sqlite_engine(url, immediate=True)
            self._reader = self._sqlite_engine(url, immediate=False)
        elif parsed.get_backend_name() == "postgresql":
            if parsed.drivername == "postgresql":
                parsed = parsed.set(drivername="postgresql+psycopg")
            # A short connect timeout: the tracking endpoints spool rather than wait.
            self._writer = self._reader = create_engine(
                parsed, pool_size=10, max_overflow=20, pool_pre_ping=True,
                connect_args={"connect_timeout": 5},
            )
        else:
            raise ConfigError("database URL must be sqlite:///FILE or postgresql+psycopg://...")

    @staticmethod
    def _sqlite_engine(url: str, *, immediate: bool) -> Engine:
        engine = create_engine(url, connect_args={"check_same_thread": False, "timeout": 10})

        @event.listens_for(engine, "connect")
        def _on_connect(dbapi_conn: Any, _record: Any) -> None:
            dbapi_conn.isolation_level = None  # we issue BEGIN ourselves, below
            cur = dbapi_conn.cursor()
            cur.execute("PRAGMA journal_mode=WAL")
            cur.execute("PRAGMA synchronous=NORMAL")
            cur.execute("PRAGMA busy_timeout=10000")
            cur.execute("PRAGMA foreign_keys=ON")
            cur.close()

        @event.listens_for(engine, "begin")
        def _on_begin(conn: Connection) -> None:
            conn.exec_driver_sql("BEGIN IMMEDIATE" if immediate else "BEGIN")

        return engine

    @property
    def engine(self) -> Engine:
        return self._writer

    @contextlib.contextmanager
    def write(self) -> Iterator[Connection]:
        """A transaction that commits when the block ends, rolls back on error."""
        with self._writer.begin() as conn:
            yield conn

    @contextlib.contextmanager
    def read(self) -> Iterator[Connection]:
        with self._reader.connect() as conn:
            yield conn

    def dispose(self) -> None:
        self._writer.dispose()
        if self._reader is not self._writer:
            self._reader.dispose()

    def migration_lock(self, conn: Connection) -> None:
        """Let only one process migrate at a time (PostgreSQL; SQLite locks by itself).
        Held until the connection's transaction ends, commit or rollback: a session lock
        outlived a failed migration in its pooled connection, and the next migration in
        the same process then waited for itself forever."""
        if not self.is_sqlite:
            conn.exec_driver_sql(f"SELECT pg_advisory_xact_lock({_MIGRATE_LOCK})")


def conflict_insert(conn: Connection, table: Table) -> Any:
    """An INSERT in the connection's dialect, the kind that knows ON CONFLICT."""
    return (postgresql if conn.dialect.name == "postgresql" else sqlite).insert(table)


def upsert_add(
    conn: Connection, table: Table, rows: Sequence[Mapping[str, Any]], keys: Sequence[str],
    add: Sequence[str] = (), latest: Sequence[str] = (), earliest: Sequence[str] = (),
) -> None:
    """Insert rows; on a key conflict add the `add` columns, keep the greatest `latest`
    values, and keep a stored `earliest` value (the first one recorded), taking the new
    one only where none was stored. One statement on both backends (storage/bulk.py)."""
    if not rows:
        return
    columns = list(rows[0])
    upsert_rows(conn, table, columns, [tuple(r[c] for c in columns) for r in rows],
                keys, add=add, latest=latest, earliest=earliest)


_EVENT_COLUMNS = ("id", "domain", "ts", "event", "recipient", "message_id", "delivery_id",
                  "severity", "tags", "data")
_dumps = json.JSONEncoder(separators=(",", ":")).encode


def insert_events(conn: Connection, rows: Sequence[dict[str, Any]]) -> list[str]:
    """Insert events (rows with a `data` dict: the event JSON), giving them ids in
    commit order.

    Keyset paging over events (the Events API) must never skip an event that commits
    late. So ids are allocated inside the writing transaction, under a lock that lasts
    until commit (SQLite's write lock; an advisory lock on PostgreSQL), each greater than
    every id already stored. Call this last in a transaction, to hold the lock briefly.
    It relies on READ COMMITTED (PostgreSQL's default): the max(id) read after the lock
    sees every earlier writer's commit.
    """
    if not rows:
        return []
    ids = new_event_ids(conn, len(rows))
    stored = []
    tagged = []
    for row, id_ in zip(rows, ids, strict=True):
        get = row.get
        tags = get("tags") or ""
        stored.append((id_, row["domain"], row["ts"], row["event"], get("recipient"),
                       get("message_id"), get("delivery_id"), get("severity"), tags,
                       _dumps(dict(row["data"], id=id_))))
        if tags:
            tagged += [(row["domain"], tag, id_) for tag in event_tag_names(tags)]
    insert_rows(conn, events, _EVENT_COLUMNS, stored)
    # The tag index of the Events API, in the same transaction as its events.
    insert_rows(conn, event_tags, ("domain", "tag", "event_id"), tagged)
    return ids


def new_event_ids(conn: Connection, count: int) -> list[str]:
    """`count` new event ids, each greater than every stored one, under the lock that
    serialises event writers until the transaction ends (see insert_events)."""
    if conn.dialect.name == "postgresql":
        conn.exec_driver_sql(f"SELECT pg_advisory_xact_lock({_EVENTS_LOCK})")
    last = conn.exec_driver_sql("SELECT max(id) FROM events").scalar()
    start = max(now_us(), id_micros(last) + 1 if last else 0)
    return [id_from_parts(start + i, os.urandom(8)) for i in range(count)]


def event_tag_names(tags: str) -> list[str]:
    """The tags of an events.tags value ("|a|b|"), each once."""
    return list(dict.fromkeys(t for t in tags.split("|") if t))


def _redact(url: str) -> str:
    """The URL without its password, for messages and logs."""
    try:
        return make_url(url).render_as_string(hide_password=True)
    except Exception:
        return "<unparseable URL>"
