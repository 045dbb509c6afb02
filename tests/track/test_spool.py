"""Journal lines: every hit comes back exactly as it was written, in both line formats."""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from mailbeacon.model.hit import Hit
from mailbeacon.model.ids import new_id
from mailbeacon.model.tokens import Kind
from mailbeacon.track.spool import Spool, _hit, _line

texts = st.text(st.characters(codec="utf-8"), max_size=200)


@given(kind=st.sampled_from([Kind.OPEN, Kind.CLICK, Kind.UNSUBSCRIBE]), ts=st.integers(0, 2**62),
       ip=texts, agent=texts, method=st.sampled_from(["GET", "HEAD", "POST"]), url=texts,
       index=st.integers(0, 65535), scope=texts)
def test_a_line_gives_back_its_hit(kind: Kind, ts: int, ip: str, agent: str, method: str,
                                   url: str, index: int, scope: str) -> None:
    hit = Hit(kind, new_id(), ts, ip, agent, method, url, index, scope)
    line = _line(hit)
    assert line.endswith("\n") and line.count("\n") == 1  # one line, whatever the agent says
    assert json.loads(line)[0] == int(kind)
    assert _hit(line) == hit


def test_lines_of_the_earlier_object_format_still_load() -> None:
    """Journal files written before the array format (an upgrade with hits waiting)."""
    delivery = new_id()
    line = json.dumps({"kind": 2, "delivery_id": delivery, "ts": 5, "ip": "192.0.2.1",
                       "user_agent": "Thunderbird", "method": "GET", "url": "https://e.x/",
                       "link_index": 3, "scope": ""})
    assert _hit(line) == Hit(Kind.CLICK, delivery, 5, "192.0.2.1", "Thunderbird", "GET",
                             "https://e.x/", 3, "")


def test_the_lag_is_the_age_of_the_oldest_waiting_hit(tmp_path: Path,
                                                       caplog: pytest.LogCaptureFixture) -> None:
    """Measured from the files (open and closed, any process's), logged by the loader,
    and back to 0 once everything is loaded."""
    spool = Spool(tmp_path / "spool")
    assert spool.lag() == 0.0
    now = time.time_ns() // 1000
    spool.append([Hit(Kind.OPEN, new_id(), now - 40_000_000, "192.0.2.1", "x")])
    spool.close_if_older(0)
    spool.append([Hit(Kind.OPEN, new_id(), now - 5_000_000, "192.0.2.1", "x")])  # still open
    lag = spool.lag()
    assert 40 <= lag < 45 and spool.lag_seconds == lag
    with caplog.at_level(logging.INFO, "mailbeacon.spool"):
        spool.report_lag(every=0.0)
    (line,) = [r for r in caplog.records if "journal loader" in r.getMessage()]
    assert line.levelno == logging.WARNING and "oldest unloaded hit 4" in line.getMessage()

    class _Transaction:
        def __enter__(self) -> object:
            return self

        def __exit__(self, *_: object) -> None:
            return None

        def execute(self, *_: object) -> object:
            return self

        def first(self) -> None:
            return None

    stored: list[Hit] = []
    assert spool.replay(lambda _, hits: stored.extend(hits), _Transaction) == 2
    assert len(stored) == 2 and spool.loaded == 2
    assert spool.lag() == 0.0
