"""Mailgun's filter expressions for the Events API, parsed into a small value (no I/O).

An expression is terms separated by spaces (all must hold), `AND` (the same), `OR`
(either side), `NOT` before a term (it must not hold), and `"quoted phrases"` as one term:

    >>> parse_filter("event", "opened OR clicked", fold=True)
    Filter(clauses=(((False, 'opened'),), ((False, 'clicked'),)))
    >>> str(parse_filter("subject", 'NOT "weekly digest" sale', fold=False))
    'NOT "weekly digest" sale'

There are no parentheses: `a b OR c` is `(a AND b) OR c`, as in Mailgun. Operators are
upper case (`opened or clicked` is also accepted where values are case-insensitive words,
`fold=True`: event names, tags, severities, addresses). What a term matches (a whole value,
a tag, a part of a header) is the caller's business.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from mailbeacon.errors import BadRequest

__all__ = ["MAX_TERMS", "MAX_TEXT", "Filter", "parse_filter"]

MAX_TEXT = 255  # characters of one parameter, as written and as stored in page tokens
MAX_TERMS = 32
_WORD = re.compile(r'\s*(?:"([^"]*)"|([^\s"]+))')
_OPERATORS = ("AND", "OR", "NOT")
_SPACE_OR_QUOTE = re.compile(r'[\s"]')

Literal = tuple[bool, str]  # (negated, term)


@dataclass(frozen=True)
class Filter:
    """Any of `clauses` holds; a clause holds when all its literals do."""

    clauses: tuple[tuple[Literal, ...], ...]

    @classmethod
    def of(cls, *values: str) -> Filter:
        """Any of these values (an exact filter built by code, not parsed)."""
        return cls(tuple(((False, value),) for value in values))

    @property
    def alternatives(self) -> tuple[str, ...] | None:
        """The values when the filter is a plain "a OR b OR c", else None."""
        if all(len(c) == 1 and not c[0][0] for c in self.clauses):
            return tuple(c[0][1] for c in self.clauses)
        return None

    def to_json(self) -> list[list[Any]]:
        """Compact and exact: a term is a string, a negated term a list of one string."""
        return [[[term] if negated else term for negated, term in c] for c in self.clauses]

    @classmethod
    def from_json(cls, data: Any, check: Callable[[str], str]) -> Filter:
        """The inverse of `to_json`, every term checked again; ValueError when malformed."""
        if not isinstance(data, list) or not data or len(data) > MAX_TERMS:
            raise ValueError("filter must be a non-empty list")
        clauses = []
        for clause in data:
            if not isinstance(clause, list) or not clause:
                raise ValueError("clause must be a non-empty list")
            literals = []
            for item in clause:
                negated = isinstance(item, list)
                term = item[0] if negated and len(item) == 1 else item
                if not isinstance(term, str):
                    raise ValueError("term must be a string")
                literals.append((negated, check(term)))
            clauses.append(tuple(literals))
        found = cls(tuple(clauses))
        if sum(len(c) for c in found.clauses) > MAX_TERMS:
            raise ValueError("too many terms")
        return found

    def __str__(self) -> str:
        def term(text: str) -> str:
            plain = text and not _SPACE_OR_QUOTE.search(text) and text.upper() not in _OPERATORS
            return text if plain else f'"{text}"'

        return " OR ".join(" ".join(("NOT " if neg else "") + term(t) for neg, t in clause)
                           for clause in self.clauses)


def parse_filter(param: str, text: str, *, fold: bool, single: bool = False,
                 check: Callable[[str], str] = str) -> Filter:
    """Parse one parameter's expression; `BadRequest` names `param` and the problem.

    `fold`: operators in any case. `single`: the field has one value per event, so two
    positive terms joined by AND can never match: refused, to point at OR. `check`
    normalises each term and raises BadRequest for a bad one.
    """
    if len(text) > MAX_TEXT:
        raise BadRequest(f"{param} is longer than {MAX_TEXT} characters")
    if any(ord(c) < 0x20 or ord(c) == 0x7F for c in text):
        raise BadRequest(f"{param} must not contain control characters")
    clauses: list[tuple[Literal, ...]] = []
    current: list[Literal] = []
    negated = False
    need_term = True
    for quoted, word in _words(param, text):
        operator = None if quoted else (word.upper() if fold else word)
        if operator == "OR" or operator == "AND":
            if need_term:
                raise BadRequest(f"{param}: {operator} must stand between two terms")
            if operator == "OR":
                clauses.append(tuple(current))
                current = []
            need_term = True
        elif operator == "NOT":
            if negated:
                raise BadRequest(f"{param}: NOT must be followed by a term")
            negated, need_term = True, True
        else:
            if quoted and not word:
                raise BadRequest(f'{param}: "" is an empty term')
            current.append((negated, check(word)))
            negated, need_term = False, False
    if need_term:
        raise BadRequest(f"{param}: the expression ends without a term" if clauses or current
                         or negated else f"{param} is empty")
    clauses.append(tuple(current))
    clauses = list(dict.fromkeys(clauses))  # "a OR b OR a" is "a OR b"
    if sum(len(c) for c in clauses) > MAX_TERMS:
        raise BadRequest(f"{param} has more than {MAX_TERMS} terms")
    if single and any(sum(not neg for neg, _ in c) > 1 for c in clauses):
        raise BadRequest(f"{param}: an event has one {param}, so 'a AND b' (or 'a b') "
                         "matches nothing; use 'a OR b'")
    return Filter(tuple(clauses))


def _words(param: str, text: str) -> list[tuple[bool, str]]:
    found: list[tuple[bool, str]] = []
    position = 0
    while True:
        match = _WORD.match(text, position)
        if match is None:
            if text[position:].strip():
                raise BadRequest(f"{param}: a quote is not closed")
            return found
        quoted = match.group(1) is not None
        found.append((quoted, match.group(1) if quoted else match.group(2)))
        position = match.end()
