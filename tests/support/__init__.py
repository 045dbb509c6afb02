"""What tests share besides fixtures: the in-process service, the SMTP relay, ports,
databases and small helpers. tests/conftest.py re-exports the names tests import from it."""

from tests.support.corpus import corpus_file, shared_folder
from tests.support.databases import POSTGRES_URL, REQUIRE_POSTGRES
from tests.support.helpers import (
    ManualClock,
    api,
    count_events,
    database_held,
    listeners,
    serve,
)
from tests.support.ports import free_port
from tests.support.relay import Received, SmtpRelay, running_relay
from tests.support.service import API_KEY, Service, serving, start_server, target

__all__ = [
    "ManualClock",
    "API_KEY", "POSTGRES_URL", "REQUIRE_POSTGRES", "Received", "Service", "SmtpRelay", "api",
    "corpus_file", "count_events", "database_held", "free_port", "listeners", "running_relay",
    "serve", "serving", "shared_folder", "start_server", "target",
]
