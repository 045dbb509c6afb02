"""The dashboard lists returned mail, unmatched reports first (issue 18.1)."""

from __future__ import annotations

from tests.dashboard.conftest import Dash
from tests.inbound.test_trust import FORGED_ORIGINAL, VICTIM, dsn


async def test_unmatched_reports_are_listed_on_the_dashboard(dash: Dash) -> None:
    inbound = dash.service.runtime.inbound
    status = await inbound.receive(dsn(VICTIM, FORGED_ORIGINAL), ["postmaster@example.com"])
    assert status == "unmatched"
    page = await dash.client.get("/dashboard/example.com/inbound")
    assert page.status_code == 200
    assert "1 unmatched report." in page.text and VICTIM in page.text
    matched = await dash.client.get("/dashboard/example.com/inbound?matched=yes")
    assert "0 matched reports." in matched.text and VICTIM not in matched.text
    suppressions = await dash.client.get("/dashboard/example.com/suppressions/bounces")
    assert "/dashboard/example.com/inbound" in suppressions.text
