"""The web dashboard: server-rendered pages under /dashboard, behind its own login.

    from mailbeacon.dashboard import build_dashboard
    dashboard = build_dashboard(runtime)  # an ASGI app for paths under /dashboard

Users are made with `mailbeacon users create NAME` (mailbeacon.dashboard.commands).
"""

from mailbeacon.dashboard.app import build_dashboard

__all__ = ["build_dashboard"]
