"""Logging in, sessions, CSRF and the login throttle."""

from __future__ import annotations

import asyncio
import math
import threading
import time

import httpx
import pytest
from click.testing import CliRunner

from mailbeacon.cli.users import users as users_command
from mailbeacon.dashboard.sessions import Signer
from mailbeacon.dashboard.throttle import LoginThrottle
from mailbeacon.dashboard.users import check_password, hash_password, list_users
from mailbeacon.dashboard.web import safe_back
from mailbeacon.net.throttle import Limit
from tests.dashboard.conftest import PASSWORD, USERNAME, Dash, csrf_of
from tests.support import serving

PAGES = ["/dashboard/", "/dashboard/example.com/", "/dashboard/example.com/messages",
         "/dashboard/example.com/campaigns", "/dashboard/example.com/contacts",
         "/dashboard/example.com/suppressions/bounces", "/dashboard/example.com/settings",
         "/dashboard/example.com/webhooks", "/dashboard/example.com/outbox",
         "/dashboard/example.com/overview.svg",
         "/dashboard/example.com/suppressions/bounces.csv"]
ACTIONS = ["/dashboard/domains", "/dashboard/logout",
           "/dashboard/example.com/suppressions/bounces/add",
           "/dashboard/example.com/suppressions/bounces/remove",
           "/dashboard/example.com/suppressions/bounces/import",
           "/dashboard/example.com/settings/tracking",
           "/dashboard/example.com/settings/unsubscribe",
           "/dashboard/example.com/settings/bounces", "/dashboard/example.com/settings/dkim",
           "/dashboard/example.com/settings/keys",
           "/dashboard/example.com/settings/keys/00000000000000000000000000/revoke",
           "/dashboard/example.com/webhooks/delivered",
           "/dashboard/example.com/webhooks/rotate-key", "/dashboard/example.com/webhooks/replay",
           "/dashboard/example.com/contacts/a@example.org/consent",
           "/dashboard/example.com/contacts/a@example.org/reset-bounces",
           "/dashboard/example.com/contacts/a@example.org/erase"]


def _with_cookie(dash: Dash, session_cookie: str) -> httpx.AsyncClient:
    """Another browser that presents the given session cookie."""
    return httpx.AsyncClient(transport=dash.client._transport, base_url="http://testserver",
                             headers={"cookie": f"mb_session={session_cookie}"})


async def test_nothing_is_visible_without_login(anonymous: Dash) -> None:
    for path in PAGES:
        r = await anonymous.client.get(path)
        assert r.status_code == 303, path
        assert r.headers["location"].startswith("/dashboard/login"), path
        assert "example.com" not in r.text
    r = await anonymous.client.get("/dashboard/example.com/messages?tag=x")
    assert r.headers["location"] == "/dashboard/login?next=%2Fdashboard%2Fexample.com%2F" \
                                    "messages%3Ftag%3Dx"
    for path in ACTIONS:
        r = await anonymous.client.post(path, data={"address": "a@example.org"})
        assert r.status_code == 303 and r.headers["location"] == "/dashboard/login", path
    # The login page and static files are public.
    assert (await anonymous.client.get("/dashboard/login")).status_code == 200
    css = await anonymous.client.get("/dashboard/static/dashboard.css")
    assert css.status_code == 200 and "text/css" in css.headers["content-type"]
    assert (await anonymous.client.get("/dashboard")).headers["location"] == "/dashboard/"


async def test_login_sets_a_safe_cookie_and_logout_ends_the_session(anonymous: Dash) -> None:
    r = await anonymous.login(next_url="/dashboard/example.com/messages")
    assert r.status_code == 303
    assert r.headers["location"] == "/dashboard/example.com/messages"
    cookie = next(h for h in r.headers.get_list("set-cookie") if h.startswith("mb_session="))
    flags = {part.strip().lower() for part in cookie.split(";")}
    assert {"httponly", "samesite=lax", "path=/dashboard"} <= flags
    assert "secure" not in flags  # plain http here; see the https test
    page = await anonymous.client.get("/dashboard/example.com/")
    assert page.status_code == 200 and USERNAME in page.text
    assert page.headers["cache-control"] == "no-store"
    assert "script-src 'self'" in page.headers["content-security-policy"]
    assert page.headers["x-frame-options"] == "DENY"

    stolen = anonymous.client.cookies.get("mb_session")
    r = await anonymous.client.post("/dashboard/logout", data={"csrf": csrf_of(page.text)})
    assert r.status_code == 303 and r.headers["location"] == "/dashboard/login"
    assert (await anonymous.client.get("/dashboard/")).status_code == 303
    # The cookie is dead on the server too, not only deleted in this browser.
    assert stolen
    assert (await _with_cookie(anonymous, stolen).get("/dashboard/")).status_code == 303


async def test_cookie_is_secure_over_https(anonymous: Dash) -> None:
    transport = anonymous.client._transport  # the same app, reached over https
    async with httpx.AsyncClient(transport=transport, base_url="https://testserver") as client:
        page = await client.get("/dashboard/login")
        r = await client.post("/dashboard/login", data={
            "csrf": csrf_of(page.text), "username": USERNAME, "password": PASSWORD})
        cookie = next(h for h in r.headers.get_list("set-cookie")
                      if h.startswith("mb_session="))
        assert "secure" in {p.strip().lower() for p in cookie.split(";")}


async def test_wrong_password_and_forged_cookies_get_nothing(anonymous: Dash) -> None:
    r = await anonymous.login(password="wrong password")
    assert r.status_code == 401 and "Wrong username or password" in r.text
    r = await anonymous.login(username="nobody")
    assert r.status_code == 401 and "Wrong username or password" in r.text
    assert (await _with_cookie(anonymous, "abc.def").get("/dashboard/")).status_code == 303


async def test_login_is_not_an_open_redirect(anonymous: Dash) -> None:
    for target in ("https://evil.example/", "//evil.example/", "/\\evil.example",
                   "/dashboard//evil.example"):
        r = await anonymous.login(next_url=target)
        assert r.headers["location"] == "/dashboard/", target
        anonymous.client.cookies.clear()
    assert safe_back("/dashboard/x?y=1") == "/dashboard/x?y=1"
    assert safe_back("/other") == "/dashboard/"


async def test_every_post_needs_the_session_csrf_token(dash: Dash) -> None:
    for path in ACTIONS:
        for token in (None, "forged-token"):
            data = {"address": "a@example.org", "name": "new.example"}
            if token:
                data["csrf"] = token
            r = await dash.client.post(path, data=data)
            assert r.status_code == 403, (path, token)
    # Nothing happened: still logged in, no suppression, no domain.
    r = await dash.client.get("/dashboard/example.com/suppressions/bounces")
    assert r.status_code == 200 and "a@example.org" not in r.text
    assert "new.example" not in (await dash.client.get("/dashboard/")).text
    # And with the token it works.
    r = await dash.post("/dashboard/example.com/suppressions/bounces/add",
                        {"address": "a@example.org"})
    assert r.status_code == 303
    assert "a@example.org" in (await dash.client.get(r.headers["location"])).text


async def test_login_form_needs_its_csrf_token(anonymous: Dash) -> None:
    await anonymous.client.get("/dashboard/login")
    r = await anonymous.client.post("/dashboard/login", data={
        "csrf": "forged", "username": USERNAME, "password": PASSWORD})
    assert r.status_code == 403
    assert (await anonymous.client.get("/dashboard/")).status_code == 303


async def test_failed_logins_are_throttled(anonymous: Dash) -> None:
    for _ in range(5):
        assert (await anonymous.login(password="guess")).status_code == 401
    r = await anonymous.login()  # even the right password waits now
    assert r.status_code == 429 and "Too many failed logins" in r.text
    assert 0 < int(r.headers["retry-after"]) <= 60
    # Another user is not locked out by guesses at this one (same IP, under its limit).
    from mailbeacon.dashboard.users import create_user

    create_user(anonymous.db, "other", PASSWORD)
    assert (await anonymous.login(username="other")).status_code == 303


def test_throttle_window_and_limits() -> None:
    throttle = LoginThrottle((Limit("ui", 3, 60), Limit("i", 5, 60), Limit("u", 100, 60)))
    for i in range(3):
        assert throttle.begin("bob", "1.2.3.4", now=i) == 0
    assert throttle.begin("bob", "1.2.3.4", now=3) == pytest.approx(57)
    assert throttle.begin("Bob", "1.2.3.4", now=3) > 0  # names are case-insensitive
    assert throttle.begin("bob", "5.6.7.8", now=3) == 0  # per IP
    assert throttle.begin("bob", "1.2.3.4", now=61) == 0  # the window slid
    spray = LoginThrottle((Limit("ui", 3, 60), Limit("i", 5, 60), Limit("u", 100, 60)))
    for i in range(5):
        spray.begin(f"user{i}", "1.2.3.4", now=10)
    assert spray.begin("carol", "1.2.3.4", now=11) > 0  # 5 from this IP
    assert spray.begin("carol", "1.2.3.5", now=11) == 0
    spray.succeeded("carol", "1.2.3.5", 11)  # a success is not a failure


def test_per_user_limit_across_addresses_grows() -> None:
    """The default per-user limit: 10 tries from anywhere, then 1 s, 2 s, 4 s... up to 60 s
    between tries, at most 30 in 15 minutes."""
    throttle = LoginThrottle()
    for i in range(10):
        assert throttle.begin("admin", f"203.0.113.{i}", now=i) == 0
    assert throttle.begin("admin", "198.51.100.1", now=9.5) == pytest.approx(0.5)
    now, waits = 9.0, []
    for i in range(8):
        waits.append(throttle.begin("admin", f"198.51.100.{i}", now=now))
        now += waits[-1]
        assert throttle.begin("admin", f"198.51.100.{i}", now=now) == 0
    assert waits == [1, 2, 4, 8, 16, 32, 60, 60]
    assert throttle.begin("other", "198.51.100.1", now=now) == 0  # another user is free
    # A success takes back its own try, not the others: the delay stays.
    assert throttle.begin("admin", "192.0.2.1", now=now + 60) == 0
    throttle.succeeded("admin", "192.0.2.1", now + 60)
    assert throttle.begin("admin", "192.0.2.2", now=now + 61) == 0
    assert throttle.begin("admin", "192.0.2.3", now=now + 62) == pytest.approx(59)


def test_password_hashes() -> None:
    stored = hash_password("s3cret password")
    assert stored.startswith("scrypt$32768$8$1$")
    assert check_password(stored, "s3cret password")
    assert not check_password(stored, "s3cret passwore")
    assert not check_password("garbage", "x")
    assert hash_password("same") != hash_password("same")  # salted


def test_signer_rejects_tampering() -> None:
    signer = Signer(b"k" * 32)
    signed = signer.sign("value")
    assert signer.unsign(signed) == "value"
    assert signer.unsign(signed[:-1] + ("A" if signed[-1] != "A" else "B")) is None
    assert signer.unsign("value") is None
    assert Signer(b"x" * 32).unsign(signed) is None


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_users_command(database_url: str) -> None:
    runner = CliRunner()
    env = {"MAILBEACON_DATABASE_URL": database_url}
    r = runner.invoke(users_command, ["create", "alice"], input="pass word 1\npass word 1\n",
                      env=env)
    assert r.exit_code == 0, r.output
    assert "created user alice" in r.output
    r = runner.invoke(users_command, ["create", "bob", "--password-stdin"],
                      input="another pass\n", env=env)
    assert r.exit_code == 0, r.output
    r = runner.invoke(users_command, ["create", "bob", "--password-stdin"],
                      input="another pass\n", env=env)
    assert r.exit_code == 1 and "already exists" in r.output
    r = runner.invoke(users_command, ["create", "carol", "--password-stdin"], input="short\n",
                      env=env)
    assert r.exit_code == 1 and "at least 8" in r.output
    r = runner.invoke(users_command, ["create", "x y", "--password-stdin"],
                      input="long enough\n", env=env)
    assert r.exit_code == 1 and "username" in r.output
    r = runner.invoke(users_command, ["list"], env=env)
    assert "alice" in r.output and "bob" in r.output
    r = runner.invoke(users_command, ["password", "bob", "--password-stdin"],
                      input="changed pass\n", env=env)
    assert r.exit_code == 0, r.output
    r = runner.invoke(users_command, ["delete", "alice"], env=env)
    assert r.exit_code == 0, r.output
    from mailbeacon.storage.db import Database

    db = Database(database_url)
    try:
        assert [u.username for u in list_users(db)] == ["bob"]
    finally:
        db.dispose()


async def _concurrent_guesses(dash: Dash, monkeypatch: pytest.MonkeyPatch, guesses: int,
                              forwarded: bool) -> tuple[list[int], int, float]:
    """`guesses` wrong passwords for one user at once, over real sockets to uvicorn (which
    trusts X-Forwarded-For from 127.0.0.1); each from its own address when `forwarded`.
    Returns the answers, how many passwords were hashed (each on a worker thread) and
    how long the guessing took."""
    from mailbeacon.dashboard import users

    hashed: list[int] = []
    loop_thread = threading.get_ident()
    real_check = users.check_password

    def counted_check(stored: str, password: str) -> bool:
        hashed.append(threading.get_ident())
        return real_check(stored, password)

    monkeypatch.setattr(users, "check_password", counted_check)
    async with serving(dash.service.app,
                       forwarded_allow_ips="127.0.0.1") as http, \
            httpx.AsyncClient(base_url=f"http://127.0.0.1:{http.config.port}",
                              trust_env=False, timeout=120,
                              limits=httpx.Limits(max_connections=guesses,
                                                  max_keepalive_connections=0)) as client:
        token = csrf_of((await client.get("/dashboard/login")).text)

        async def guess(number: int) -> int:
            headers = {"X-Forwarded-For": f"198.51.100.{number}"} if forwarded else {}
            r = await client.post("/dashboard/login", headers=headers, data={
                "csrf": token, "username": USERNAME, "password": f"guess {number}"})
            return r.status_code

        started = time.monotonic()
        answers = await asyncio.gather(*(guess(n) for n in range(guesses)))
        elapsed = time.monotonic() - started
    assert loop_thread not in hashed  # hashing never ran on the event loop
    return answers, len(hashed), elapsed


async def test_concurrent_guesses_are_counted_before_hashing(
        anonymous: Dash, monkeypatch: pytest.MonkeyPatch) -> None:
    answers, hashed, _ = await _concurrent_guesses(anonymous, monkeypatch, 60, forwarded=False)
    assert sorted(answers) == [401] * 5 + [429] * 55  # 5 a minute per user and address
    assert hashed == 5


async def test_rotating_forwarded_addresses_meet_the_per_user_limit(
        anonymous: Dash, monkeypatch: pytest.MonkeyPatch) -> None:
    answers, hashed, elapsed = await _concurrent_guesses(anonymous, monkeypatch, 60,
                                                         forwarded=True)
    # 10 tries, then one 1 s after the 10th, one 2 s after that, 4 s...: on a slow machine
    # the later guesses of the burst may come after the first delays have passed.
    delayed = int(math.log2(elapsed + 1))
    assert answers.count(401) == hashed <= 10 + delayed
    assert answers.count(429) == 60 - hashed >= 50 - delayed
