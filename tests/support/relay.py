"""A real upstream SMTP relay on loopback (aiosmtpd) that records what it receives."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from email import message_from_bytes
from email.message import EmailMessage
from email.policy import default as default_policy
from typing import Any

from aiosmtpd.controller import Controller

from tests.support.ports import free_port


@dataclass
class Received:
    sender: str
    recipients: list[str]
    data: bytes

    @property
    def message(self) -> EmailMessage:
        msg = message_from_bytes(self.data, _class=EmailMessage, policy=default_policy)
        assert isinstance(msg, EmailMessage)
        return msg

    def part(self, content_type: str) -> str:
        for part in self.message.walk():
            if part.get_content_type() == content_type:
                assert isinstance(part, EmailMessage)
                return str(part.get_content())
        raise AssertionError(f"no {content_type} part")


@dataclass
class SmtpRelay:
    """Records what it receives; `reply` decides the answer to RCPT per recipient."""

    port: int
    received: list[Received] = field(default_factory=list)
    reply: Callable[[str], str | None] = lambda rcpt: None  # None: accept

    @property
    def url(self) -> str:
        return f"smtp+plain://127.0.0.1:{self.port}"

    async def handle_RCPT(self, server: Any, session: Any, envelope: Any, address: str,
                          rcpt_options: list[str]) -> str:
        answer = self.reply(address)
        if answer:
            return answer
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        self.received.append(Received(envelope.mail_from, list(envelope.rcpt_tos),
                                       bytes(envelope.content)))
        return "250 2.0.0 Ok: queued as TEST"

    async def wait_for(self, count: int, timeout: float = 10.0) -> list[Received]:
        deadline = asyncio.get_running_loop().time() + timeout
        while len(self.received) < count:
            if asyncio.get_running_loop().time() > deadline:
                raise AssertionError(f"relay got {len(self.received)} messages, wanted {count}")
            await asyncio.sleep(0.02)
        return self.received


@contextmanager
def running_relay() -> Iterator[SmtpRelay]:
    """An SmtpRelay listening on a free loopback port (its own thread and loop)."""
    relay = SmtpRelay(free_port())
    controller = Controller(relay, hostname="127.0.0.1", port=relay.port)
    controller.start()
    try:
        yield relay
    finally:
        controller.stop()
