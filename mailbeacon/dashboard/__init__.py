"""The web dashboard: server-rendered pages under /dashboard, behind its own login.

    from mailbeacon.dashboard import build_dashboard
    dashboard = build_dashboard(runtime)  # an ASGI app for paths under /dashboard

Users are made with `mailbeacon users create NAME` (mailbeacon.cli.users).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from starlette.types import ASGIApp

    from mailbeacon.runtime import Runtime

__all__ = ["build_dashboard"]


def build_dashboard(runtime: Runtime) -> ASGIApp:
    """The dashboard app (see mailbeacon.dashboard.app); imported on first use, so that
    the command line does not load templates and charts."""
    from mailbeacon.dashboard.app import build_dashboard as build

    return build(runtime)
