"""Keyset paging as the Mailgun APIs do it: first, last, next and prev pages of a list.

A list is ordered by a key; `next` and `prev` carry the key of the row to start after,
so pages stay right while rows are added (no offsets).
"""

from __future__ import annotations

from typing import Any, Literal

from sqlalchemy import ColumnElement, Connection

from mailbeacon.errors import BadRequest

Page = Literal["first", "last", "next", "prev"]
PAGES: tuple[Page, ...] = ("first", "last", "next", "prev")


def parse_page(value: str) -> Page:
    """A `page` parameter; BadRequest naming the choices otherwise."""
    # Mailgun's paging URLs say "previous"; the Tags API (and ours) say "prev".
    value = "prev" if value == "previous" else value
    for page in PAGES:
        if page == value:
            return page
    raise BadRequest(f"'page' must be one of {', '.join(PAGES)}")


def byte_order(conn: Connection, column: ColumnElement[Any]) -> ColumnElement[Any]:
    """`column` compared byte by byte, so both backends list text keys in one order."""
    # SQLite compares bytes already; PostgreSQL follows the database's locale unless told.
    return column.collate("C") if conn.dialect.name == "postgresql" else column
