"""The shared corpus of real mail (../shared/corpora, or MAILBEACON_SHARED): read only,
so tests on any worker may read it at once."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.support.databases import REQUIRE_POSTGRES

# tests/support/corpus.py -> the checkout's parent folder holds shared/
_BESIDE = Path(__file__).resolve().parents[3] / "shared"


def shared_folder() -> Path:
    """../shared (or MAILBEACON_SHARED): skipped with a reason where absent, failed in CI."""
    folder = Path(os.environ.get("MAILBEACON_SHARED", _BESIDE))
    if not (folder / "corpora").is_dir():
        if REQUIRE_POSTGRES:  # CI=1: the shared corpus must be there
            pytest.fail(f"the shared folder with corpora/ is missing at {folder}")
        pytest.skip(f"the shared folder with corpora/ is absent at {folder}")
    return folder


def corpus_file(name: str) -> bytes:
    return (shared_folder() / "corpora" / "bounces" / "sisimai" / name).read_bytes()
