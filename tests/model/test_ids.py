"""Ids: 26 base32hex characters of 16 bytes that sort as their bytes do."""

from __future__ import annotations

import base64
import os

import pytest
from hypothesis import given
from hypothesis import strategies as st

from mailbeacon.model.ids import id_from_bytes, id_micros, id_to_bytes, message_id_local, new_id


@given(st.binary(min_size=16, max_size=16))
def test_ids_are_lowercase_unpadded_base32hex(raw: bytes) -> None:
    text = id_from_bytes(raw)
    assert text == base64.b32hexencode(raw).decode().rstrip("=").lower()
    assert id_to_bytes(text) == raw


@given(st.binary(min_size=16, max_size=16), st.binary(min_size=16, max_size=16))
def test_ids_sort_as_their_bytes(a: bytes, b: bytes) -> None:
    assert (id_from_bytes(a) < id_from_bytes(b)) == (a < b)


def test_new_ids_carry_their_time() -> None:
    assert id_micros(new_id(1_796_000_000_000_000)) == 1_796_000_000_000_000



def test_message_ids_carry_at_least_96_random_bits(monkeypatch: pytest.MonkeyPatch) -> None:
    """A Message-ID ties returned mail to its delivery (DESIGN 7): it must not be
    guessable. Count the random bytes drawn for one, as intake makes it."""
    real = os.urandom
    drawn: list[int] = []

    def urandom(n: int) -> bytes:
        drawn.append(n)
        return real(n)

    monkeypatch.setattr(os, "urandom", urandom)
    local = message_id_local()
    assert sum(drawn) * 8 >= 96
    assert len(local) * 5 - 2 - 64 >= 96  # base32hex digits, less the time's 64 bits

