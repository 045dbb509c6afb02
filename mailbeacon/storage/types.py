"""Column types of our own.

`JSONText` holds JSON as text (SQL type TEXT on both backends, so a column changes type
without a migration): values are encoded when written and decoded when read, in the
thread that runs the query, so no code parses its columns by hand.

    Column("detail", JSONText, nullable=False)
    conn.execute(table.insert().values(detail={"results": []}))  # stored '{"results":[]}'
"""

from __future__ import annotations

import json
from typing import Any

from sqlalchemy import Dialect, Text
from sqlalchemy.types import TypeDecorator


class JSONText(TypeDecorator[Any]):
    """JSON in a TEXT column: compact, UTF-8 as is. SQL NULL and empty text (the server
    default of some columns, e.g. inbound_messages.detail) read as None."""

    impl = Text
    cache_ok = True

    def process_bind_param(self, value: Any, dialect: Dialect) -> str | None:
        if value is None:
            return None
        return json.dumps(value, separators=(",", ":"), ensure_ascii=False)

    def process_result_value(self, value: Any, dialect: Dialect) -> Any:
        if value is None or value == "":
            return None
        return json.loads(value)
