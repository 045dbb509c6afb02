"""JSONText: JSON in a TEXT column, the same bytes on both backends."""

from __future__ import annotations

import sqlalchemy as sa

from mailbeacon.model.ids import new_id
from mailbeacon.storage.db import Database
from mailbeacon.storage.schema import inbound_messages


def test_json_columns_encode_and_decode(db: Database) -> None:
    detail = {"results": [{"status": "bounce", "note": "é ✓"}], "n": 1.5}
    base = {"received_at": 1, "source": "smtp", "size": 1, "raw": b"x",
            "status": "processed"}
    with db.write() as conn:
        conn.execute(inbound_messages.insert().values(
            **base, id=new_id(), sha256="a" * 64, recipients=["b@example.org"], detail=detail))
        # As old rows: the server defaults, an empty detail.
        conn.execute(inbound_messages.insert().values(**base, id=new_id(), sha256="b" * 64))
    with db.read() as conn:
        rows = conn.execute(sa.select(inbound_messages.c.sha256, inbound_messages.c.recipients,
                                      inbound_messages.c.detail)
                            .order_by(inbound_messages.c.sha256)).all()
        stored = conn.execute(sa.text("SELECT detail FROM inbound_messages ORDER BY sha256")
                              ).scalars().all()
    assert [(r.recipients, r.detail) for r in rows] == [(["b@example.org"], detail), ([], None)]
    # Compact, and UTF-8 as is rather than \u escapes.
    assert stored == ['{"results":[{"status":"bounce","note":"é ✓"}],"n":1.5}', ""]
