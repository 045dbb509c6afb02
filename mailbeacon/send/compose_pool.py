"""Where messages are composed: never on the event loop.

Composing (parsing the stored MIME, rewriting the HTML, encoding the parts, DKIM) is CPU
work. In a thread it still holds the GIL in long stretches: a regular expression over a
5 MB body holds it for 0.3 s at a time, and measured here the event loop lagged up to
0.35 s (p99 0.19 s) behind while one 5 MB message was composed in a thread, against
13 ms (p99 8 ms) with a worker process. So large messages are composed in worker
processes; small ones (a few milliseconds each, where a process would only add pickling)
in one thread.

Each place keeps the composers of recent messages: a message with 1,000 recipients is
parsed and its HTML planned once, and a message always goes to the same process.
An exception while composing one delivery becomes a `CompositionError` for that delivery
alone; a worker process that dies is replaced.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import multiprocessing
import os
import threading
import time
import zlib
from collections import OrderedDict
from concurrent.futures import Executor, ProcessPoolExecutor, ThreadPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass
from typing import Any

from mailbeacon.domains.domain import Domain
from mailbeacon.errors import MailbeaconError
from mailbeacon.model.tokens import TokenCodec
from mailbeacon.send.compose import Composed, Composer, Tracking
from mailbeacon.send.relay import transparent

log = logging.getLogger("mailbeacon.compose")
COMPOSER_CACHE = 32  # composers of recent messages kept by each thread or process
LARGE_MESSAGE = 256 * 1024  # bytes of stored MIME from which a process composes it


class CompositionError(MailbeaconError, ValueError):
    """A message cannot be composed for a recipient (unknown charset, broken MIME...)."""


@dataclass(frozen=True)
class Draft:
    """A stored message and what composing it for each recipient needs."""

    key: str  # names the message and its domain's settings: a settings change, a new key
    mime: bytes
    domain: Domain
    tracking: Tracking
    recipient_variables: dict[str, dict[str, Any]] | None


class Composers:
    """The composers of recent messages in one thread or process, and the boundary that
    turns any exception of one composition into a reason."""

    def __init__(self, codec: TokenCodec) -> None:
        self._codec = codec
        self._cache: OrderedDict[str, Composer | str] = OrderedDict()

    def compose(self, key: str, draft: Draft | None, delivery_id: str,
                recipient: str) -> Composed | str | None:
        """The composed message, or the reason it cannot be composed (a str), or None
        when `draft` is None and this message is not known here (send it again)."""
        composer = self._cache.get(key)
        if composer is None:
            if draft is None:
                return None
            try:
                composer = Composer(draft.mime, draft.domain, draft.tracking, self._codec,
                                    draft.recipient_variables)
            except Exception as exc:  # remembered: every recipient fails the same way
                composer = describe(exc)
            self._cache[key] = composer
            if len(self._cache) > COMPOSER_CACHE:
                self._cache.popitem(last=False)
        else:
            self._cache.move_to_end(key)
        if isinstance(composer, str):
            return composer
        try:
            return composer.render(delivery_id, recipient)
        except Exception as exc:
            return describe(exc)


def describe(exc: BaseException) -> str:
    """What went wrong, in words for the `failed` event."""
    if isinstance(exc, RecursionError):
        what = "its MIME parts are nested too deeply"
    elif isinstance(exc, LookupError) and str(exc).startswith("unknown encoding: "):
        what = "unknown charset " + str(exc).removeprefix("unknown encoding: ")
    else:
        what = str(exc) or type(exc).__name__
    return f"could not compose the message: {what}"


# In a worker process: its composers, made by the pool's initializer.
_here: Composers | None = None


def _start_process(codec: TokenCodec) -> None:
    global _here
    _here = Composers(codec)
    threading.Thread(target=_exit_with_parent, args=(os.getppid(),), daemon=True).start()


def _exit_with_parent(parent: int) -> None:
    """A composing process ends with the process it composes for, however that ends
    (a worker process waits for its next job forever otherwise)."""
    while os.getppid() == parent:
        time.sleep(1.0)
    os._exit(0)


def _compose_here(key: str, draft: Draft | None, delivery_id: str,
                  recipient: str) -> Composed | str | None:
    assert _here is not None
    composed = _here.compose(key, draft, delivery_id, recipient)
    if isinstance(composed, Composed):  # the DATA payload too, while off the event loop
        return dataclasses.replace(composed, wire=transparent(composed.data))
    return composed


class ComposePool:
    """Composes deliveries off the event loop: `await pool.compose(draft, id, rcpt)`."""

    def __init__(self, codec: TokenCodec, processes: int | None = None,
                 large: int = LARGE_MESSAGE) -> None:
        self._codec = codec
        self._large = large
        self._thread = ThreadPoolExecutor(1, thread_name_prefix="compose")
        self._local = Composers(codec)
        count = processes or max(1, (os.cpu_count() or 2) - 1)
        # One single-process executor each, so that a message always meets its composer.
        self._processes: list[ProcessPoolExecutor | None] = [None] * count
        self._known: list[OrderedDict[str, None]] = [OrderedDict() for _ in range(count)]

    async def compose(self, draft: Draft, delivery_id: str, recipient: str) -> Composed:
        """This delivery's message; CompositionError with the reason when it cannot be."""
        loop = asyncio.get_running_loop()
        if len(draft.mime) < self._large:
            result = await loop.run_in_executor(self._thread, self._local.compose, draft.key,
                                                draft, delivery_id, recipient)
        else:
            result = await self._in_process(draft, delivery_id, recipient)
        if isinstance(result, str):
            raise CompositionError(result)
        assert result is not None
        return result

    async def _in_process(self, draft: Draft, delivery_id: str,
                          recipient: str) -> Composed | str | None:
        loop = asyncio.get_running_loop()
        index = zlib.crc32(draft.key.encode()) % len(self._processes)
        known = self._known[index]
        crashed = 0
        while True:
            executor = self._process(index)
            # Only a message the process may not have travels with its MIME.
            sent = None if draft.key in known else draft
            try:
                result = await loop.run_in_executor(executor, _compose_here, draft.key, sent,
                                                    delivery_id, recipient)
            except BrokenProcessPool:
                # Perhaps not this delivery's fault (it may have waited behind the one that
                # crashed): one more try in a fresh process.
                self._processes[index] = None
                known.clear()
                crashed += 1
                if crashed > 1:
                    return "could not compose the message: it crashed the composing process"
                continue
            if result is None:  # the process had let it go meanwhile
                known.pop(draft.key, None)
                continue
            known[draft.key] = None
            known.move_to_end(draft.key)
            if len(known) > COMPOSER_CACHE:
                known.popitem(last=False)
            return result

    def _process(self, index: int) -> Executor:
        executor = self._processes[index]
        if executor is None:
            # spawn: a fork of a process with threads may copy a held lock.
            executor = self._processes[index] = ProcessPoolExecutor(
                1, mp_context=multiprocessing.get_context("spawn"),
                initializer=_start_process, initargs=(self._codec,))
        return executor

    def close(self) -> None:
        """Stop composing; what is running finishes in the background."""
        self._thread.shutdown(wait=False, cancel_futures=True)
        for executor in self._processes:
            if executor is not None:
                executor.shutdown(wait=False, cancel_futures=True)
        self._processes = [None] * len(self._processes)
