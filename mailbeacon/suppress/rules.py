"""Suppression lists: addresses mailbeacon must not send to (DESIGN 7, 8).

Kinds: bounce, unsubscribe (scoped: "*" the whole domain, a tag, or "list:<list-id>"),
complaint, and the allowlist, which keeps an address (or a whole domain) off the bounce
and complaint lists. Unsubscribes are always honoured, allowlisted or not: a person who
asked to stop must not be mailed again.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Connection, select

from mailbeacon.storage.db import conflict_insert
from mailbeacon.storage.schema import suppressions


class SuppressionKind(enum.StrEnum):
    BOUNCE = "bounce"  # the address bounced hard, or softly too often
    UNSUBSCRIBE = "unsubscribe"  # the recipient asked to stop, within a scope
    COMPLAINT = "complaint"  # the recipient reported mail as spam
    ALLOWLIST = "allowlist"  # never put on the bounce or complaint list


ALL_SCOPE = "*"


@dataclass(frozen=True)
class Block:
    """Why a recipient must not be sent to."""

    kind: SuppressionKind
    code: str
    error: str

    @property
    def reason(self) -> str:
        """The `failed` event's reason: suppress-bounce, suppress-unsubscribe, ..."""
        return f"suppress-{self.kind}"


def unsubscribe_scopes(tags: Iterable[str], list_id: str | None) -> set[str]:
    """The unsubscribe rows that stop a message with these tags and list."""
    scopes = {ALL_SCOPE, *tags}
    if list_id:
        scopes.add(f"list:{list_id}")
    return scopes


def allowlisted(conn: Connection, domain: str, addresses: Sequence[str]) -> set[str]:
    """The addresses (lowercase) kept off the bounce and complaint lists."""
    lowered = {a.lower() for a in addresses}
    entries = set(conn.execute(
        select(suppressions.c.address).where(
            suppressions.c.domain == domain,
            suppressions.c.kind == str(SuppressionKind.ALLOWLIST),
            suppressions.c.address.in_(sorted(lowered | {a.rpartition("@")[2]
                                                         for a in lowered})),
        )).scalars())
    return {a for a in lowered if a in entries or a.rpartition("@")[2] in entries}


def blocks(conn: Connection, domain: str, addresses: Sequence[str], tags: Sequence[str],
           list_id: str | None) -> dict[str, Block]:
    """For each address that must not get this message, the reason (lowercase keys)."""
    lowered = sorted({a.lower() for a in addresses})
    domains = sorted({a.rpartition("@")[2] for a in lowered})
    rows = conn.execute(
        select(suppressions).where(
            suppressions.c.domain == domain,
            suppressions.c.address.in_([*lowered, *domains]),
        )
    ).all()
    return _judge(rows, lowered, unsubscribe_scopes(tags, list_id))


Check = tuple[str, str, Sequence[str], str | None]  # domain, address, tags, list id


def blocks_each(conn: Connection, checks: Sequence[Check]) -> list[Block | None]:
    """What `blocks` says of each (domain, address, tags, list id), in one query for
    them all (the delivery worker checks a whole claimed batch at once)."""
    if not checks:
        return []
    lowered = {address.lower() for _, address, _, _ in checks}
    rows = conn.execute(
        select(suppressions).where(
            suppressions.c.domain.in_(sorted({domain for domain, _, _, _ in checks})),
            suppressions.c.address.in_(
                sorted(lowered | {a.rpartition("@")[2] for a in lowered})),
        )
    ).all()
    by_key: dict[tuple[str, str], list[Any]] = {}
    for row in rows:  # in the order the database returned them, as `blocks` sees them
        by_key.setdefault((row.domain, row.address), []).append(row)
    found: list[Block | None] = []
    for domain, address, tags, list_id in checks:
        address = address.lower()
        mine = [*by_key.get((domain, address), ()),
                *by_key.get((domain, address.rpartition("@")[2]), ())]
        found.append(_judge(mine, [address], unsubscribe_scopes(tags, list_id))
                     .get(address) if mine else None)
    return found


def _judge(rows: Sequence[Any], lowered: Sequence[str], scopes: set[str]) -> dict[str, Block]:
    """The blocks that suppression rows (of one domain) put on these addresses."""
    allowed = {r.address for r in rows if r.kind == SuppressionKind.ALLOWLIST}
    found: dict[str, Block] = {}
    # Unsubscribe first: it is honoured even for allowlisted addresses.
    order = {SuppressionKind.UNSUBSCRIBE: 0, SuppressionKind.COMPLAINT: 1,
             SuppressionKind.BOUNCE: 2}
    for row in sorted(rows, key=lambda r: order.get(SuppressionKind(r.kind), 9)):
        kind = SuppressionKind(row.kind)
        if kind is SuppressionKind.ALLOWLIST or row.address not in lowered:
            continue
        if kind is SuppressionKind.UNSUBSCRIBE and row.tag not in scopes:
            continue
        if kind is not SuppressionKind.UNSUBSCRIBE and (
                row.address in allowed or row.address.rpartition("@")[2] in allowed):
            continue
        found.setdefault(row.address, Block(kind, row.code, row.error))
    return found


def add(conn: Connection, domain: str, kind: SuppressionKind, address: str, ts: int,
        tag: str = "", code: str = "", error: str = "") -> None:
    """Add or refresh one suppression (an existing row keeps its creation time)."""
    upsert(conn, [{"domain": domain, "kind": str(kind), "address": address.lower(),
                   "tag": tag, "code": code, "error": error, "created_at": ts}])


def upsert(conn: Connection, rows: Sequence[dict[str, Any]]) -> None:
    """Add or refresh suppressions in one statement; existing rows keep their creation
    time. Rows must be unique by key: PostgreSQL refuses to update a row twice."""
    stmt = conflict_insert(conn, suppressions)
    conn.execute(stmt.on_conflict_do_update(
        index_elements=["domain", "kind", "address", "tag"],
        set_={"code": stmt.excluded.code, "error": stmt.excluded.error}), list(rows))
