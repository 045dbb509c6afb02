"""Logging in and out.

The login form has its own CSRF token (a signed cookie repeated in the form), since there
is no session yet. Every try is counted by the throttle (dashboard/throttle.py) before
the password is hashed, in a thread: concurrent guesses cannot outrun the count.
"""

from __future__ import annotations

import math
import secrets
import time

from starlette.datastructures import FormData
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from .sessions import LOGIN_COOKIE, SESSION_COOKIE, SESSION_SECONDS, same_token
from .users import authenticate
from .web import PREFIX, action, dashboard, in_thread, redirect, render, safe_back, text_field


def _client_ip(request: Request) -> str:
    return request.client.host if request.client else "unknown"


def _login_page(request: Request, status: int = 200, error: str = "",
                username: str = "", headers: dict[str, str] | None = None) -> Response:
    dash = dashboard(request)
    token = dash.signer.unsign(request.cookies.get(LOGIN_COOKIE)) or secrets.token_urlsafe(32)
    response = render(request, "login.html", status_code=status, response_headers=headers,
                      login_csrf=token, error=error, username=username,
                      next=safe_back(request.query_params.get("next"), ""))
    response.set_cookie(LOGIN_COOKIE, dash.signer.sign(token), path=PREFIX + "/login",
                        httponly=True, samesite="lax", secure=request.url.scheme == "https")
    return response


def login_form(request: Request) -> Response:
    if request.scope["state"].get("session") is not None:
        return redirect(request, safe_back(request.query_params.get("next")))
    return _login_page(request)


async def login_submit(request: Request) -> Response:
    dash = dashboard(request)
    async with request.form() as form:
        expected = dash.signer.unsign(request.cookies.get(LOGIN_COOKIE))
        if expected is None or not same_token(text_field(form, "csrf"), expected):
            return await in_thread(_login_page, request, 403,
                                   "The login form expired. Please try again.")
        username = text_field(form, "username").strip()[:64]
        password = text_field(form, "password")
        next_url = safe_back(text_field(form, "next"))
    ip = _client_ip(request)
    began = time.monotonic()
    wait = dash.throttle.begin(username, ip, began)
    if wait > 0:
        seconds = math.ceil(wait)
        return await in_thread(_login_page, request, 429,
                               f"Too many failed logins. Try again in {seconds} seconds.",
                               username, {"Retry-After": str(seconds)})
    user = await in_thread(authenticate, dash.runtime.db, username, password)
    if user is None:
        return await in_thread(_login_page, request, 401,
                               "Wrong username or password.", username)
    dash.throttle.succeeded(username, ip, began)
    token = await in_thread(dash.sessions.create, user.id)
    response = redirect(request, next_url)
    response.set_cookie(SESSION_COOKIE, dash.signer.sign(token), max_age=SESSION_SECONDS,
                        path=PREFIX, httponly=True, samesite="lax",
                        secure=request.url.scheme == "https")
    response.delete_cookie(LOGIN_COOKIE, path=PREFIX + "/login")
    return response


@action()
async def logout(request: Request, form: FormData) -> Response:
    dash = dashboard(request)
    token = dash.signer.unsign(request.cookies.get(SESSION_COOKIE))
    if token:
        await in_thread(dash.sessions.delete, token)
    response = redirect(request, PREFIX + "/login")
    response.delete_cookie(SESSION_COOKIE, path=PREFIX)
    return response


routes = [
    Route("/login", login_form, methods=["GET"]),
    Route("/login", login_submit, methods=["POST"]),
    Route("/logout", logout, methods=["POST"]),
]
