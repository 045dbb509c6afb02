"""The suppression lists as the Suppressions API and CLI see them (Mailgun's shape).

Mailgun's four lists map onto `suppressions` kinds: bounces, unsubscribes, complaints and
whitelists (our allowlist). An entry is one address; an unsubscribed address gathers all
its scopes into one entry. Entries are checked here (`parse_entry`, `read_csv`) so the
API and the CLI accept exactly the same input, then written all at once (`add_entries`).
"""

from __future__ import annotations

import contextlib
import csv
import io
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any, TextIO

from sqlalchemy import Connection, delete, select

from mailbeacon.errors import BadRequest, NotFound
from mailbeacon.model import spreadsheet
from mailbeacon.model.addresses import check_address
from mailbeacon.model.clock import now_us, parse_rfc2822, rfc2822
from mailbeacon.model.paging import Page, byte_order
from mailbeacon.model.tags import check_tags, normalize_tags
from mailbeacon.storage.db import Database
from mailbeacon.storage.schema import soft_bounces, suppressions
from mailbeacon.suppress import rules as suppression_rows
from mailbeacon.suppress.rules import ALL_SCOPE, SuppressionKind

LISTS: dict[str, SuppressionKind] = {
    "bounces": SuppressionKind.BOUNCE,
    "unsubscribes": SuppressionKind.UNSUBSCRIBE,
    "complaints": SuppressionKind.COMPLAINT,
    "whitelists": SuppressionKind.ALLOWLIST,
}
NAMES: dict[SuppressionKind, str] = {kind: name for name, kind in LISTS.items()}

# The CSV columns of each list, as import reads them and export writes them.
CSV_COLUMNS: dict[SuppressionKind, tuple[str, ...]] = {
    SuppressionKind.BOUNCE: ("address", "code", "error", "created_at"),
    SuppressionKind.UNSUBSCRIBE: ("address", "tags", "created_at"),
    SuppressionKind.COMPLAINT: ("address", "created_at"),
    SuppressionKind.ALLOWLIST: ("address", "domain", "reason", "created_at"),
}
DEFAULT_CODE = "550"
MAX_CODE_LENGTH = 8  # suppressions.code is String(8)
MAX_SCOPE_LENGTH = 330  # suppressions.tag is String(330)
MAX_CSV_ERRORS = 10  # bad lines named in one answer
WRITE_CHUNK = 1000  # rows per INSERT statement


@dataclass(frozen=True)
class Entry:
    """One address on one list; an allowlist entry's address may be a bare domain."""

    address: str  # lowercased
    scopes: tuple[str, ...] = ()  # unsubscribes: "*", tags, "list:<id>"; else empty
    code: str = ""  # bounces: the SMTP code
    error: str = ""  # bounces: the error; whitelists: the reason
    created_at: int | None = None  # µs since the epoch; None: when it is added

    @property
    def is_domain(self) -> bool:
        return "@" not in self.address


def not_found(kind: SuppressionKind) -> NotFound:
    return NotFound(f"Address not found in {NAMES[kind]} table")


# --- checking input -----------------------------------------------------------------


def lookup_key(value: str) -> str:
    """An address or domain from a URL, in the form it is stored in (for lookups)."""
    value = value.strip()
    try:
        return normalize_address(value) if "@" in value else normalize_domain(value)
    except BadRequest:
        return value.lower()  # cannot be stored, so it will simply not be found


def normalize_address(value: str, field: str = "address") -> str:
    return check_address(value.strip(), field).lower()


def normalize_domain(value: str, field: str = "domain") -> str:
    """A bare domain in the form the worker compares recipients' domains with."""
    value = value.strip()
    if "@" not in value:
        with contextlib.suppress(BadRequest):
            # check_address normalises recipients; a domain checked the same way matches.
            return check_address(f"postmaster@{value}", field).rpartition("@")[2].lower()
    raise BadRequest(f"'{field}' parameter is not a valid domain: {value!r}")


def normalize_scope(value: str) -> str:
    """An unsubscribe scope: '*', 'list:<list-id>', or a tag as intake stores it."""
    value = value.strip()
    if value == ALL_SCOPE:
        return value
    if value.lower().startswith("list:"):
        # Intake stores List-Id values lowercased, without angle brackets.
        list_id = value[5:].strip().removeprefix("<").removesuffix(">").strip().lower()
        if not list_id or not list_id.isprintable() or len(list_id) + 5 > MAX_SCOPE_LENGTH:
            raise BadRequest(f"'tag' parameter is not a valid list scope: {value!r}")
        return f"list:{list_id}"
    check_tags([value])  # BadRequest naming the tag
    return normalize_tags([value])[0]




def parse_entry(kind: SuppressionKind, fields: Mapping[str, Any]) -> Entry:
    """An entry from the fields of a form, a JSON object or a CSV row; BadRequest if bad.

    Absent fields (or None) take their defaults; unknown fields are ignored, as Mailgun
    does. Unsubscribes take `tag` or `tags`, a string or a list; whitelists `address` or
    `domain`, and `reason`.
    """
    raw_date = _text(fields, "created_at")
    created_at = parse_rfc2822(raw_date, "created_at") if raw_date and raw_date.strip() else None
    address = (_text(fields, "address") or "").strip()
    if kind is SuppressionKind.ALLOWLIST:
        domain = (_text(fields, "domain") or "").strip()
        if address and domain:
            raise BadRequest("give either 'address' or 'domain', not both")
        if not address and not domain:
            raise BadRequest("'address' or 'domain' parameter is missing")
        value = normalize_address(address) if address else normalize_domain(domain)
        return Entry(value, error=_text(fields, "reason") or "", created_at=created_at)

    if not address:
        raise BadRequest("'address' parameter is missing")
    value = normalize_address(address)
    if kind is SuppressionKind.BOUNCE:
        code = (_text(fields, "code", numbers=True) or "").strip() or DEFAULT_CODE
        if len(code) > MAX_CODE_LENGTH or not code.isascii() or not code.isprintable():
            raise BadRequest(f"'code' must be at most {MAX_CODE_LENGTH} printable ASCII "
                             f"characters, got {code!r}")
        return Entry(value, code=code, error=_text(fields, "error") or "",
                     created_at=created_at)
    if kind is SuppressionKind.UNSUBSCRIBE:
        raw = [*_texts(fields, "tag"), *_texts(fields, "tags")]
        scopes = [normalize_scope(s) for s in raw if s.strip()] or [ALL_SCOPE]
        return Entry(value, scopes=tuple(dict.fromkeys(scopes)), created_at=created_at)
    return Entry(value, created_at=created_at)


def parse_entries(kind: SuppressionKind, items: Any, max_items: int) -> list[Entry]:
    """Entries from a decoded JSON body: an array of objects. All checked, or BadRequest
    naming the first bad entry by its index in the array."""
    if not isinstance(items, list):
        raise BadRequest(f"the JSON body must be an array of up to {max_items} objects")
    if not items:
        raise BadRequest("the JSON array is empty: nothing to add")
    if len(items) > max_items:
        raise BadRequest(f"too many entries: {len(items)}; at most {max_items} per request "
                         "(import a CSV file for more)")
    found = []
    for index, item in enumerate(items):
        try:
            if not isinstance(item, dict):
                raise BadRequest("must be a JSON object")
            found.append(parse_entry(kind, item))
        except BadRequest as exc:
            raise BadRequest(f"entry at index {index}: {exc.message}") from exc
    return found


def _text(fields: Mapping[str, Any], name: str, numbers: bool = False) -> str | None:
    value = fields.get(name)
    if value is None or isinstance(value, str):
        return value
    # JSON clients send a bounce code as a number; bool is an int, but never a code.
    if numbers and isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    raise BadRequest(f"'{name}' must be a string")


def _texts(fields: Mapping[str, Any], name: str) -> list[str]:
    value = fields.get(name)
    if value is None:
        return []
    if isinstance(value, str):
        return [value]
    if isinstance(value, list) and all(isinstance(v, str) for v in value):
        return value
    raise BadRequest(f"'{name}' must be a string or a list of strings")


# --- CSV, shared by the API's import and the CLI ---------------------------------------


def read_csv(kind: SuppressionKind, data: bytes, max_rows: int | None = None) -> list[Entry]:
    """The entries of a CSV file with a header row (columns as in `CSV_COLUMNS`, any case,
    unknown ones ignored). All rows are checked first: BadRequest names the bad lines."""
    try:
        text = data.decode("utf-8-sig")  # spreadsheets like to start with a BOM
    except UnicodeDecodeError as exc:
        raise BadRequest(f"the file is not UTF-8 text (bad byte at offset {exc.start})"
                         ) from exc
    reader = csv.reader(io.StringIO(text, newline=""))
    errors: list[str] = []
    found: list[Entry] = []
    try:
        header = next(reader, None)
        while header is not None and not any(h.strip() for h in header):
            header = next(reader, None)  # blank lines before the header
        if header is None:
            raise BadRequest(f"the file is empty: it needs a header row such as "
                             f"{','.join(CSV_COLUMNS[kind])}")
        columns = [h.strip().lower() for h in header]
        wanted = {c: columns.index(c) for c in CSV_COLUMNS[kind] if c in columns}
        if "tag" in columns and kind is SuppressionKind.UNSUBSCRIBE and "tags" not in wanted:
            wanted["tags"] = columns.index("tag")  # the form field's name, as a column
        key_columns = ("address", "domain") if kind is SuppressionKind.ALLOWLIST else (
            "address",)
        if not any(c in wanted for c in key_columns):
            raise BadRequest(f"the header row has no {' or '.join(map(repr, key_columns))} "
                             f"column (it has: {', '.join(columns)}); expected e.g. "
                             f"{','.join(CSV_COLUMNS[kind])}")
        rows = 0
        for row in reader:
            if not any(cell.strip() for cell in row):
                continue
            rows += 1
            if max_rows is not None and rows > max_rows:
                raise BadRequest(f"the file has more than {max_rows} rows: split it")
            try:
                if len(row) > len(columns):
                    raise BadRequest(f"{len(row)} fields but the header has {len(columns)} "
                                     "(quote values that contain commas)")
                # Empty cells take the defaults, as absent fields do.
                cells = {c: spreadsheet.unescape(row[i]) for c, i in wanted.items()
                         if i < len(row) and row[i]}
                found.append(parse_entry(kind, cells))
            except BadRequest as exc:
                errors.append(f"line {reader.line_num}: {exc.message}")
    except csv.Error as exc:
        errors.append(f"line {reader.line_num}: not valid CSV ({exc})")
    if errors:
        more = len(errors) - MAX_CSV_ERRORS
        shown = "; ".join(errors[:MAX_CSV_ERRORS]) + (f"; and {more} more" if more > 0 else "")
        raise BadRequest(f"nothing was imported: {shown}")
    return found


def csv_rows(kind: SuppressionKind, entry: Entry) -> list[list[str]]:
    """The CSV rows of an entry: one per scope for unsubscribes (a tag may hold commas)."""
    date = rfc2822(entry.created_at) if entry.created_at is not None else ""
    if kind is SuppressionKind.BOUNCE:
        return [[entry.address, entry.code, entry.error, date]]
    if kind is SuppressionKind.UNSUBSCRIBE:
        return [[entry.address, scope, date] for scope in entry.scopes]
    if kind is SuppressionKind.ALLOWLIST:
        address, domain = ("", entry.address) if entry.is_domain else (entry.address, "")
        return [[address, domain, entry.error, date]]
    return [[entry.address, date]]


def write_csv(kind: SuppressionKind, entries: Iterable[Entry], out: TextIO) -> int:
    """Write a header row and the entries; the number of entries written."""
    writer = spreadsheet.writer(out, lineterminator="\n")
    writer.writerow(CSV_COLUMNS[kind])
    count = 0
    for entry in entries:
        writer.writerows(csv_rows(kind, entry))
        count += 1
    return count


# --- storage -----------------------------------------------------------------------------


def add_entries(db: Database, domain: str, kind: SuppressionKind,
                entries: Sequence[Entry]) -> int:
    """Add or refresh entries in one transaction (all or nothing); the number of distinct
    addresses. As `suppressions.add` does, a stored row keeps its creation time."""
    now = now_us()
    merged: dict[str, Entry] = {}
    for entry in entries:
        before = merged.get(entry.address)
        if before is not None:
            # The same address twice, as if added one after the other: the first sets the
            # creation time, the last the details; all unsubscribe scopes count.
            entry = replace(entry, created_at=before.created_at,
                            scopes=tuple(dict.fromkeys(before.scopes + entry.scopes)))
        merged[entry.address] = entry
    rows = [
        {"domain": domain, "kind": str(kind), "address": e.address, "tag": scope,
         "code": e.code, "error": e.error,
         "created_at": e.created_at if e.created_at is not None else now}
        for e in merged.values() for scope in (e.scopes or ("",))
    ]
    with db.write() as conn:
        for start in range(0, len(rows), WRITE_CHUNK):
            _upsert(conn, rows[start:start + WRITE_CHUNK])
    return len(merged)


def _upsert(conn: Connection, rows: list[dict[str, Any]]) -> None:
    # Rows are unique by key (merged above), as suppressions.upsert needs.
    suppression_rows.upsert(conn, rows)


def find_entry(conn: Connection, domain: str, kind: SuppressionKind,
               address: str) -> Entry | None:
    rows = conn.execute(select(suppressions).where(
        suppressions.c.domain == domain, suppressions.c.kind == str(kind),
        suppressions.c.address == address.lower())).all()
    found = _entries(kind, rows)
    return found[0] if found else None


def get_entry(db: Database, domain: str, kind: SuppressionKind, address: str) -> Entry:
    with db.read() as conn:
        found = find_entry(conn, domain, kind, address)
    if found is None:
        raise not_found(kind)
    return found


def list_entries(db: Database, domain: str, kind: SuppressionKind, limit: int = 100,
                 page: Page = "first", pivot: str = "", term: str = "") -> list[Entry]:
    """One page of a list in ascending address order (keyset paging, as tags.list_tags).

    `first`/`last`: the first or last `limit` addresses; `next`/`prev`: the `limit` just
    after or before `pivot`. `term`: only addresses starting with it.
    """
    with db.read() as conn:
        address = byte_order(conn, suppressions.c.address)
        where = [suppressions.c.domain == domain, suppressions.c.kind == str(kind)]
        if term:
            # autoescape: % and _ are ordinary characters in an address.
            where.append(suppressions.c.address.startswith(term.lower(), autoescape=True))
        if page == "next":
            where.append(address > pivot.lower())
        elif page == "prev":
            where.append(address < pivot.lower())
        # The pages ending at the pivot (or at the end) are read backwards, then reversed.
        backwards = page in ("prev", "last")
        # Addresses first, then their rows: an unsubscribed address may have many rows.
        picked = conn.execute(
            select(suppressions.c.address).where(*where).group_by(suppressions.c.address)
            .order_by(address.desc() if backwards else address).limit(limit)).scalars().all()
        rows = conn.execute(select(suppressions).where(
            suppressions.c.domain == domain, suppressions.c.kind == str(kind),
            suppressions.c.address.in_(picked))).all() if picked else []
    by_address = {e.address: e for e in _entries(kind, rows)}
    order = picked[::-1] if backwards else picked
    return [by_address[a] for a in order]


def iter_entries(db: Database, domain: str, kind: SuppressionKind,
                 chunk: int = 1000) -> Iterator[Entry]:
    """Every entry of a list in address order, read a page at a time (for export)."""
    page = list_entries(db, domain, kind, chunk)
    while page:
        yield from page
        page = list_entries(db, domain, kind, chunk, "next", page[-1].address)


def delete_entry(db: Database, domain: str, kind: SuppressionKind, address: str,
                 scope: str | None = None) -> None:
    """Remove an address from a list (for unsubscribes, optionally one scope only), or
    NotFound. Removing a bounce also resets the address's soft-bounce count."""
    address = address.lower()
    with db.write() as conn:
        query = delete(suppressions).where(
            suppressions.c.domain == domain, suppressions.c.kind == str(kind),
            suppressions.c.address == address)
        if scope is not None:
            query = query.where(suppressions.c.tag == scope)
        if conn.execute(query).rowcount == 0:
            raise not_found(kind)
        if kind is SuppressionKind.BOUNCE:
            # Else the next soft bounce could put the address straight back on the list.
            conn.execute(delete(soft_bounces).where(soft_bounces.c.domain == domain,
                                                    soft_bounces.c.address == address))


def delete_all(db: Database, domain: str, kind: SuppressionKind) -> int:
    """Empty a domain's list (and, for bounces, its soft-bounce counts); rows removed."""
    with db.write() as conn:
        removed = conn.execute(delete(suppressions).where(
            suppressions.c.domain == domain, suppressions.c.kind == str(kind))).rowcount
        if kind is SuppressionKind.BOUNCE:
            conn.execute(delete(soft_bounces).where(soft_bounces.c.domain == domain))
    return int(removed)


def _entries(kind: SuppressionKind, rows: Sequence[Any]) -> list[Entry]:
    """Rows gathered into entries, one per address (unsubscribe scopes together)."""
    grouped: dict[str, list[Any]] = {}
    for row in rows:
        grouped.setdefault(row.address, []).append(row)
    found = []
    for address, group in grouped.items():
        first = group[0]
        scopes: tuple[str, ...] = ()
        if kind is SuppressionKind.UNSUBSCRIBE:
            # "*" first, then the tags and lists in byte order.
            scopes = tuple(sorted((r.tag for r in group), key=lambda s: (s != ALL_SCOPE, s)))
        found.append(Entry(address, scopes, first.code, first.error,
                           min(r.created_at for r in group)))
    return found
