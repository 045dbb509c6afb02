"""The dashboard's CSV downloads are safe to open in a spreadsheet (issue 12.4)."""

from __future__ import annotations

from mailbeacon.suppress import lists as sl
from tests.dashboard.conftest import Dash
from tests.model.test_spreadsheet import HOSTILE, assert_safe, cells


async def test_dashboard_export_is_safe(dash: Dash) -> None:
    for kind, entries in HOSTILE.items():
        sl.add_entries(dash.db, "example.com", kind, entries)
    for name in sl.LISTS:
        r = await dash.client.get(f"/dashboard/example.com/suppressions/{name}.csv")
        assert r.status_code == 200
        assert_safe(r.text)
        assert len(cells(r.text)) > len(sl.CSV_COLUMNS[sl.LISTS[name]])
