"""Dashboard forms have a small body limit, checked before the body is read (issue 12.5);
the CSV import keeps the large one."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from mailbeacon.dashboard.app import FORM_BYTES
from tests.dashboard.conftest import Dash

PIECE = 64 * 1024


class Body:
    """A 24 MB form body that counts how much of it the server took."""

    def __init__(self) -> None:
        self.taken = 0

    async def __aiter__(self) -> AsyncIterator[bytes]:
        yield b"csrf=x&username=admin&password="
        for _ in range(24 * 16):
            self.taken += PIECE
            yield b"a" * PIECE


@pytest.mark.parametrize("declared", [True, False])  # Content-Length, or chunked
async def test_login_refuses_a_huge_body_unread(anonymous: Dash, declared: bool) -> None:
    body = Body()
    headers = {"content-type": "application/x-www-form-urlencoded"}
    if declared:
        headers["content-length"] = str(24 * 1024 * 1024 + 31)
    r = await anonymous.client.post("/dashboard/login", content=body, headers=headers)
    assert r.status_code == 413
    assert "larger than" in r.text
    assert body.taken <= FORM_BYTES + PIECE  # before: all 24 MB, then a 403


async def test_forms_are_small_but_imports_are_not(dash: Dash) -> None:
    r = await dash.post("/dashboard/example.com/settings/tracking",
                        {"note": "x" * (FORM_BYTES + 1)})
    assert r.status_code == 413
    rows = "".join(f"user{i:06}@example.org,550,gone for good\n" for i in range(8000))
    data = ("address,code,error\n" + rows).encode()
    assert len(data) > 4 * FORM_BYTES
    r = await dash.post("/dashboard/example.com/suppressions/bounces/import",
                        files={"file": ("list.csv", data, "text/csv")})
    assert r.status_code == 303
    assert "Imported 8000 addresses" in (await dash.client.get(r.headers["location"])).text
