"""Many rows in one go: the statements of the hot paths, written out once per backend.

Building a SQLAlchemy `insert().on_conflict_do_update()` per batch, and binding each
row through its compiled form, cost ~850 µs of CPU per tracking hit (docs/benchmarks.md).
Here every statement is plain SQL text made once per (backend, table, columns) and run
with the driver's own batch call on rows given as tuples:

- SQLite: `executemany` of one `INSERT ... ON CONFLICT` (the loop runs in C);
- PostgreSQL: one `INSERT ... SELECT FROM unnest(array, array, ...)` per batch, every
  column passed as one array (a single round trip, whatever the batch size).

Upserts add counters, keep the latest or the earliest value, or overwrite columns: the
rules of `db.upsert_add`, which uses this module. A batch given to an upsert may hold a
key more than once (PostgreSQL cannot touch one row twice in a statement: such rows are
merged first, by the same rules).
"""

from __future__ import annotations

import functools
import json
from collections.abc import Iterable, Sequence
from typing import Any

from sqlalchemy import BigInteger, Boolean, Connection, Float, Integer, LargeBinary, Table

Row = Sequence[Any]


def is_postgres(conn: Connection) -> bool:
    return conn.dialect.name == "postgresql"


def insert_rows(conn: Connection, table: Table, columns: Sequence[str],
                rows: Sequence[Row]) -> None:
    """Insert rows (tuples in the order of `columns`)."""
    if rows:
        upsert_rows(conn, table, columns, rows, keys=())


def upsert_rows(conn: Connection, table: Table, columns: Sequence[str], rows: Sequence[Row],
                keys: Sequence[str], add: Sequence[str] = (), latest: Sequence[str] = (),
                earliest: Sequence[str] = (), replace: Sequence[str] = (),
                ignore: bool = False) -> None:
    """Insert rows (tuples in the order of `columns`); on a conflict on `keys`, add the
    `add` columns, keep the greatest `latest` value, keep a stored `earliest` value
    (taking the new one only where none was stored) and overwrite `replace` columns.
    With `ignore` (or no column to update) a conflicting row is left as it is. No keys:
    a plain insert."""
    if not rows:
        return
    pg = is_postgres(conn)
    sql = _statement(pg, table, tuple(columns), tuple(keys), tuple(add), tuple(latest),
                     tuple(earliest), tuple(replace), ignore)
    if not pg:
        conn.exec_driver_sql(sql, list(rows))
        return
    if keys:
        rows = _merged(columns, rows, keys, add, latest, earliest, replace)
    arrays = [list(values) for values in zip(*rows, strict=True)]
    for i in _float_columns(table, tuple(columns)):  # psycopg wants one type per array
        arrays[i] = [None if v is None else float(v) for v in arrays[i]]
    conn.exec_driver_sql(sql, tuple(arrays))


def any_of(conn: Connection) -> str:
    """SQL matching a column against a list given as one parameter (`list_param`):
    `WHERE id {any_of(conn)}` holds one statement for any number of values."""
    return "= ANY(%s)" if is_postgres(conn) else "IN (SELECT value FROM json_each(?))"


def list_param(conn: Connection, values: Iterable[Any]) -> Any:
    """The parameter for `any_of`."""
    return list(values) if is_postgres(conn) else json.dumps(list(values))


def mark(conn: Connection) -> str:
    """The driver's positional placeholder."""
    return "%s" if is_postgres(conn) else "?"


@functools.lru_cache(maxsize=256)
def _statement(pg: bool, table: Table, columns: tuple[str, ...], keys: tuple[str, ...],
               add: tuple[str, ...], latest: tuple[str, ...], earliest: tuple[str, ...],
               replace: tuple[str, ...], ignore: bool) -> str:
    name = table.name
    listed = ", ".join(columns)
    if pg:
        arrays = ", ".join(f"%s::{_pg_type(table.c[c].type)}[]" for c in columns)
        sql = f"INSERT INTO {name} ({listed}) SELECT * FROM unnest({arrays})"
    else:
        sql = f"INSERT INTO {name} ({listed}) VALUES ({', '.join('?' for _ in columns)})"
    if not keys:
        return sql
    greatest = "greatest" if pg else "max"  # SQLite's two-argument max() is scalar
    sets = [f"{c} = {name}.{c} + excluded.{c}" for c in add]
    sets += [f"{c} = {greatest}(coalesce({name}.{c}, excluded.{c}), "
             f"coalesce(excluded.{c}, {name}.{c}))" for c in latest]
    sets += [f"{c} = coalesce({name}.{c}, excluded.{c})" for c in earliest]
    sets += [f"{c} = excluded.{c}" for c in replace]
    conflict = f" ON CONFLICT ({', '.join(keys)}) DO "
    if ignore or not sets:
        return sql + conflict + "NOTHING"
    return sql + conflict + "UPDATE SET " + ", ".join(sets)


@functools.lru_cache(maxsize=256)
def _float_columns(table: Table, columns: tuple[str, ...]) -> list[int]:
    return [i for i, c in enumerate(columns) if isinstance(table.c[c].type, Float)]


def _pg_type(kind: Any) -> str:
    if isinstance(kind, Boolean):
        return "boolean"
    if isinstance(kind, BigInteger):
        return "bigint"
    if isinstance(kind, Integer):
        return "integer"
    if isinstance(kind, Float):
        return "float8"
    if isinstance(kind, LargeBinary):
        return "bytea"
    return "text"


def _merged(columns: Sequence[str], rows: Sequence[Row], keys: Sequence[str],
            add: Sequence[str], latest: Sequence[str], earliest: Sequence[str],
            replace: Sequence[str]) -> Sequence[Row]:
    """Rows with one per key, combined as the upsert would combine them one by one."""
    at = {c: i for i, c in enumerate(columns)}
    key_at = [at[k] for k in keys]
    found: dict[tuple[Any, ...], list[Any]] = {}
    for row in rows:
        key = tuple(row[i] for i in key_at)
        kept = found.get(key)
        if kept is None:
            found[key] = list(row)
            continue
        for c in add:
            kept[at[c]] += row[at[c]]
        for c in latest:
            old, new = kept[at[c]], row[at[c]]
            kept[at[c]] = new if old is None else old if new is None else max(old, new)
        for c in earliest:
            if kept[at[c]] is None:
                kept[at[c]] = row[at[c]]
        for c in replace:
            kept[at[c]] = row[at[c]]
    if len(found) == len(rows):
        return rows
    return [tuple(r) for r in found.values()]
