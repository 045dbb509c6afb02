"""Journal lines: every hit comes back exactly as it was written, in both line formats."""

from __future__ import annotations

import json

from hypothesis import given
from hypothesis import strategies as st

from mailbeacon.model.hit import Hit
from mailbeacon.model.ids import new_id
from mailbeacon.model.tokens import Kind
from mailbeacon.track.spool import _hit, _line

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
