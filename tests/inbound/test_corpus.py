"""The parser against Sisimai's labelled corpus of real bounces, complaints and auto-replies.

The corpus is read in place from the shared folder (`../shared` next to the repository, or
`$MAILBEACON_SHARED`), never copied. Without it these tests skip, unless CI=1 is set. Run with
`pytest -s` to see the summary; the floors below are the measured figures minus about one
point, so a regression fails while a small table change that trades one file for another
does not.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from mailbeacon.events.reasons import Reason
from mailbeacon.inbound.parser import Kind, Result, parse

REPO = Path(__file__).resolve().parents[2]
CORPUS_PARTS = ("corpora", "bounces", "sisimai")

# Measured on the corpus (see the summary printed by test_summary), minus about a point.
FLOOR_REPORTS = 0.99  # measured 629/629
FLOOR_KINDS = 0.99  # measured 629/629
FLOOR_HARD = 0.93  # measured 630/669 = 94.2% (7 misses: one result per ARF report, by design)
FLOOR_STATUS = 0.97  # measured 484/494 = 98.0%
FLOOR_COMPLAINTS = 0.99  # measured 17/17
FLOOR_AUTO_REPLIES = 0.99  # measured 6/6


def corpus_dir() -> Path | None:
    """The corpus folder, or None if it is not there."""
    shared = Path(os.environ.get("MAILBEACON_SHARED") or REPO.parent / "shared")
    folder = shared.joinpath(*CORPUS_PARTS)
    return folder if (folder / "labels.json").is_file() else None


def require_corpus() -> Path:
    """The corpus folder; skips the test without it (fails instead when CI=1)."""
    folder = corpus_dir()
    if folder is None:
        where = Path(os.environ.get("MAILBEACON_SHARED") or REPO.parent / "shared")
        message = f"bounce corpus not found under {where.joinpath(*CORPUS_PARTS)}"
        if os.environ.get("CI") == "1":
            pytest.fail(f"{message} (required when CI=1)")
        pytest.skip(f"{message} (set MAILBEACON_SHARED to its shared folder)")
    return folder


@dataclass
class Measure:
    """A count of agreements, with a few examples of disagreement."""

    name: str
    hits: int = 0
    total: int = 0
    misses: list[str] = field(default_factory=list)

    def add(self, ok: bool, example: str) -> None:
        self.total += 1
        self.hits += ok
        if not ok:
            self.misses.append(example)

    @property
    def rate(self) -> float:
        return self.hits / self.total if self.total else 1.0

    def line(self) -> str:
        return f"{self.name:<34} {self.hits:>4}/{self.total:<4} {self.rate:7.1%}"


@dataclass
class Run:
    labels: dict[str, list[dict[str, object]]]
    results: dict[str, list[Result]]


@pytest.fixture(scope="module")
def run() -> Iterator[Run]:
    folder = require_corpus()
    labels = json.loads((folder / "labels.json").read_text())
    files = sorted(folder.glob("bsd/*.eml")) + sorted(folder.glob("not/*.eml"))
    results = {str(f.relative_to(folder)): parse(f.read_bytes()) for f in files}
    yield Run(labels, results)


def _short(result: Result | None) -> str:
    if result is None:
        return "no result"
    return f"{result.kind} {result.reason} {result.status or '-'} hard={result.hard}"


def measure(run: Run) -> dict[str, Measure]:
    """Every measure the corpus test asserts, computed once."""
    reports = Measure("bsd files seen as reports")
    not_reports = Measure("not/ files not bounce/complaint")
    hard = Measure("hard/soft agreement (rows)")
    status = Measure("status agreement (rows)")
    kinds = Measure("bsd kind as expected")
    complaints = Measure("arf-* detected as complaint")
    auto = Measure("rfc3834-* detected as auto-reply")
    for name, results in run.results.items():
        first = results[0]
        if name.startswith("not/"):
            bad = first.kind in (Kind.BOUNCE, Kind.COMPLAINT)
            not_reports.add(not bad, f"{name}: {_short(first)}")
            continue
        reports.add(first.kind is not Kind.NOT_A_REPORT, f"{name}: {_short(first)}")
        base = name.split("/", 1)[1]
        kinds.add(first.kind is _expected_kind(base, run.labels[name]), f"{name}: {_short(first)}")
        if base.startswith("arf-"):
            complaints.add(first.kind is Kind.COMPLAINT, f"{name}: {_short(first)}")
        if base.startswith("rfc3834-"):
            auto.add(first.kind is Kind.AUTO_REPLY, f"{name}: {_short(first)}")
        for index, row in enumerate(run.labels[name]):
            got = results[index] if index < len(results) else None
            wanted = f"{row['reason']} {row['status'] or '-'} hard={row['hard']}"
            example = f"{name}#{index}: want {wanted}, got {_short(got)}"
            hard.add(got is not None and got.hard == row["hard"], example)
            label_status = str(row["status"])
            if label_status and not label_status.startswith(("5.0.9", "4.0.9")):
                status.add(got is not None and got.status == label_status, example)
    every = (reports, kinds, not_reports, hard, status, complaints, auto)
    return {m.name: m for m in every}


def _expected_kind(base: str, rows: list[dict[str, object]]) -> Kind:
    """Auto-replies are the rfc3834-* files; complaints are labelled "feedback"."""
    if base.startswith("rfc3834-"):
        return Kind.AUTO_REPLY
    if base.startswith("arf-") or all(row["reason"] == "feedback" for row in rows):
        return Kind.COMPLAINT
    return Kind.BOUNCE


def test_summary(run: Run) -> None:
    """Print every measure and its typical misses (visible with pytest -s)."""
    measures = measure(run)
    print("\ninbound parser on the Sisimai corpus")
    for m in measures.values():
        print(m.line())
    for m in measures.values():
        for example in m.misses[:12]:
            print(f"  miss [{m.name}] {example}")
    assert measures


def test_every_bsd_file_is_a_report(run: Run) -> None:
    assert measure(run)["bsd files seen as reports"].rate >= FLOOR_REPORTS


def test_kinds_match_the_file_families(run: Run) -> None:
    assert measure(run)["bsd kind as expected"].rate >= FLOOR_KINDS


def test_no_not_file_is_a_bounce_or_complaint(run: Run) -> None:
    m = measure(run)["not/ files not bounce/complaint"]
    assert m.total >= 1
    assert m.hits == m.total, m.misses


def test_hard_soft_agreement(run: Run) -> None:
    assert measure(run)["hard/soft agreement (rows)"].rate >= FLOOR_HARD


def test_status_agreement(run: Run) -> None:
    assert measure(run)["status agreement (rows)"].rate >= FLOOR_STATUS


def test_complaints_detected(run: Run) -> None:
    assert measure(run)["arf-* detected as complaint"].rate >= FLOOR_COMPLAINTS


def test_auto_replies_detected(run: Run) -> None:
    assert measure(run)["rfc3834-* detected as auto-reply"].rate >= FLOOR_AUTO_REPLIES


def test_label_reasons_are_in_the_vocabulary(run: Run) -> None:
    words = {str(row["reason"]) for rows in run.labels.values() for row in rows}
    assert words <= {r.value for r in Reason}


def test_result_reasons_are_in_the_vocabulary(run: Run) -> None:
    vocabulary = {r.value for r in Reason} | {""}
    assert {r.reason for rs in run.results.values() for r in rs} <= vocabulary


def test_crlf_line_ends_give_the_same_results(run: Run) -> None:
    """Messages from SMTP end lines with CRLF; the corpus files use LF."""
    folder = require_corpus()
    for name, results in run.results.items():
        raw = (folder / name).read_bytes().replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")
        assert parse(raw) == results, name


def test_corpus_results_are_well_formed(run: Run) -> None:
    for name, results in run.results.items():
        for r in results:
            assert r.recipient == r.recipient.lower(), name
            assert "\n" not in r.diagnostic and len(r.diagnostic) <= 1000, name
            assert not r.hard or (r.permanent and r.kind is Kind.BOUNCE), name
            json.dumps(r.to_json())
