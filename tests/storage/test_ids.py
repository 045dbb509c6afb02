"""Ids: 26 base32hex characters of 16 bytes that sort as their bytes do."""

from __future__ import annotations

import base64

from hypothesis import given
from hypothesis import strategies as st

from mailbeacon.ids import id_from_bytes, id_micros, id_to_bytes, new_id


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
