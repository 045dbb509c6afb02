"""CSV that spreadsheets open safely: every CSV mailbeacon writes goes through `writer`.

Spreadsheets run a cell starting with `=`, `+`, `-` or `@` (or a tab or carriage return
before one) as a formula, so a bounce text or an address from outside could become a
live `=HYPERLINK(...)` in an export (CSV injection). Such a text cell gets a leading `'`,
which spreadsheets show as "this is text"; a text cell that starts with `'` gets one too,
so `unescape` turns every written cell back into its value (the suppression import does).
Numbers are written as they are.

    out = io.StringIO()
    rows = writer(out)
    rows.writerow(["address", "error"])  # cells escaped as needed
"""

from __future__ import annotations

import csv
from collections.abc import Iterable
from typing import Any, Protocol

FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")
_ESCAPED_STARTS = (*FORMULA_STARTS, "'")


class _Writable(Protocol):
    def write(self, s: str, /) -> Any: ...


def cell(value: object) -> object:
    """The value as it goes into a cell: text that a spreadsheet would run, quoted."""
    if isinstance(value, str) and value.startswith(_ESCAPED_STARTS):
        return "'" + value
    return value


def unescape(text: str) -> str:
    """A cell's value as `cell` was given it (text from other tools passes unchanged,
    but for a leading `'` before one of the formula characters or another `'`)."""
    if text.startswith("'") and text[1:].startswith(_ESCAPED_STARTS):
        return text[1:]
    return text


class SafeWriter:
    """csv.writer with every cell passed through `cell`."""

    def __init__(self, out: _Writable, lineterminator: str = "\r\n") -> None:
        self._writer = csv.writer(out, lineterminator=lineterminator)

    def writerow(self, row: Iterable[object]) -> None:
        self._writer.writerow([cell(value) for value in row])

    def writerows(self, rows: Iterable[Iterable[object]]) -> None:
        for row in rows:
            self.writerow(row)


def writer(out: _Writable, lineterminator: str = "\r\n") -> SafeWriter:
    return SafeWriter(out, lineterminator)
