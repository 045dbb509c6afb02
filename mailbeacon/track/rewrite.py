"""Rewrite links and insert an open pixel in outgoing mail bodies.

The work is split in two because it runs once per recipient: ``plan_html``/``plan_text``
analyse a document once, and the plan's ``render`` produces each recipient's copy with
string joins only. The document is never re-serialised: every character outside the
rewritten attribute values, the removed ``disable-tracking`` attributes and the inserted
pixel is emitted exactly as the sender wrote it.
"""

from __future__ import annotations

import bisect
import html
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from html.parser import HTMLParser
from typing import NamedTuple
from urllib.parse import urljoin, urlsplit

__all__ = ["HtmlPlan", "Link", "TextPlan", "pixel_tag", "plan_html", "plan_text"]


@dataclass(frozen=True)
class Link:
    """A tracked link: its position among tracked links, decoded target and source text."""

    index: int
    url: str
    raw: str


def pixel_tag(pixel_url: str) -> str:
    """Return the open-pixel ``<img>``; display:block because display:none skips loading."""
    return (
        f'<img src="{html.escape(pixel_url)}" width="1" height="1" alt="" '
        'style="display:block;height:1px;width:1px;border:0;margin:0;padding:0;" />'
    )


# --- URL classification -------------------------------------------------------------

# Merge tags of the common ESPs. Braces and "*|" never occur unencoded in real URLs, so
# any fragment of such a tag is enough (a plain-text URL may be cut at the tag's space).
_MERGE_TAG = re.compile(r"\{\{|\}\}|\{%|%\}|\*\||\|\*|(?<![\w\]])\[[A-Za-z_][\w.\-:, =]*\]")
# "%name%" also looks like percent-escapes ("%E2%80%99"), hence the check in _is_placeholder.
_PERCENT_TAG = re.compile(r"%(?=[A-Za-z_][\w.\-:]*%)")
_HEX2 = re.compile(r"[0-9A-Fa-f]{2}")


def _is_placeholder(url: str) -> bool:
    """Tell whether ``url`` contains a template placeholder the ESP substitutes later."""
    if _MERGE_TAG.search(url):
        return True
    for m in _PERCENT_TAG.finditer(url):
        close = url.index("%", m.end())
        # A placeholder's "%" is not a valid escape at one end or the other.
        if not (_HEX2.match(url, m.end()) and _HEX2.match(url, close + 1)):
            return True
    return False


_TAB_NEWLINE = str.maketrans("", "", "\t\n\r")


def _target(value: str, base: str | None) -> str | None:
    """Return the http(s) URL an href value points to, or None if it must not be tracked."""
    # Browsers drop tabs and newlines anywhere in a URL; a redirect must not carry them.
    url = value.strip().translate(_TAB_NEWLINE)
    if not url or url.startswith("#") or _is_placeholder(url):
        return None
    try:
        parts = urlsplit(url)
        if not parts.scheme:
            if base is None:
                return None
            url = urljoin(base, url)
            if _is_placeholder(url):
                return None
            parts = urlsplit(url)
    except ValueError:  # e.g. an unbalanced "[" in the host
        return None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        return None
    return url


_UNQUOTED_SAFE = re.compile(r"[^\s\"'=<>`]+")


def _attr(url: str, quote: str) -> str:
    """Format a replacement attribute value for the original quoting style."""
    value = html.escape(url)  # escapes & < > " ' so it is safe in any quoting style
    if quote or _UNQUOTED_SAFE.fullmatch(value):
        return value
    return f'"{value}"'


# --- HTML scanning ---------------------------------------------------------------------

# Mirrors CPython's tagfind_tolerant/attrfind_tolerant so spans line up with the parser's
# own view of the tag; _parse_attrs cross-checks the result against the parser's attrs.
_TAG_NAME = re.compile(r"<[a-zA-Z][^\t\n\r\f />\x00]*(?:\s|/(?!>))*")
_ATTR = re.compile(
    r"((?<=['\"\s/])[^\s/>][^\s/=>]*)(\s*=+\s*('[^']*'|\"[^\"]*\"|(?!['\"])[^>\s]*))?"
    r"(?:\s|/(?!>))*"
)
_CONDITIONAL = re.compile(r"\s*\[if\s[^\]]*\]\s*>", re.I)
_ENDIF = re.compile(r"<!\[endif\]\s*$", re.I)
# Elements whose content browsers do not parse as markup.
_RAW_TEXT = frozenset(
    {"script", "style", "textarea", "title", "xmp", "iframe", "noembed", "noframes", "plaintext"}
)

_HREF, _DROP, _TOP, _BOTTOM = range(4)


class _Attr(NamedTuple):
    name: str
    value: str | None  # raw, without quotes
    name_start: int  # offsets inside the start-tag text
    value_start: int
    value_end: int
    quote: str  # '"', "'" or "" (unquoted)


class _Slot(NamedTuple):
    start: int
    end: int
    kind: int
    quote: str = ""
    link: Link = Link(-1, "", "")  # an _HREF's target; index and raw are filled in last


def _parse_attrs(text: str) -> list[_Attr]:
    """Split a raw start tag into attributes with their offsets."""
    m = _TAG_NAME.match(text)
    if m is None:
        return []
    attrs = []
    k = m.end()
    while k < len(text):
        m = _ATTR.match(text, k)
        if m is None:
            break
        value: str | None = None
        quote, vstart, vend = "", m.end(1), m.end(1)
        if m.group(2) is not None:
            value, (vstart, vend) = m.group(3), m.span(3)
            if len(value) >= 2 and value[0] in "'\"" and value[0] == value[-1]:
                quote, value, vstart, vend = value[0], value[1:-1], vstart + 1, vend - 1
        attrs.append(_Attr(m.group(1).lower(), value, m.start(1), vstart, vend, quote))
        k = m.end()
    return attrs


@dataclass
class _State:
    """Everything collected while scanning one document (shared by nested scans)."""

    doc: str
    newlines: list[int]  # offsets of "\n", the only line break html.parser counts
    base: str | None = None
    skip: str | None = None  # raw-text element we are inside of
    edits: list[_Slot] = field(default_factory=list)
    body_open: int | None = None  # end of first <body>
    head_close: int | None = None  # end of first </head>
    html_open: int | None = None  # end of first <html>
    body_close: int | None = None  # start of last </body>
    html_close: int | None = None  # start of last </html>


class _Scanner(HTMLParser):
    """Records link spans of ``state.doc[start:]`` as absolute offsets."""

    def __init__(self, state: _State, start: int, top: bool) -> None:
        super().__init__(convert_charrefs=True)
        self._s = state
        self._start = start
        self._top = top  # nested scans (conditional comments) do not place the pixel
        self._nl0 = bisect.bisect_left(state.newlines, start)

    def _abs_pos(self) -> int:
        """Convert getpos() (lines counted by "\\n" only) to an offset in the document."""
        line, col = self.getpos()
        if line == 1:
            return self._start + col
        return self._s.newlines[self._nl0 + line - 2] + 1 + col

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        s = self._s
        text = self.get_starttag_text()
        pos = self._abs_pos()
        if s.skip is not None or text is None or not s.doc.startswith(text, pos):
            return  # never edit a tag whose position we are not sure of
        if tag in _RAW_TEXT:
            s.skip = tag
        elif tag == "a" or tag == "area" or tag.startswith("v:"):
            self._link(text, pos, attrs)
        elif tag == "base" and s.base is None:
            s.base = next((v.strip() for k, v in attrs if k == "href" and v), None)
        elif self._top and tag == "body" and s.body_open is None:
            s.body_open = pos + len(text)
        elif self._top and tag == "html" and s.html_open is None:
            s.html_open = pos + len(text)

    def _link(self, text: str, pos: int, attrs: list[tuple[str, str | None]]) -> None:
        parsed = _parse_attrs(text)
        decoded = [(a.name, html.unescape(a.value) if a.value else a.value) for a in parsed]
        if decoded != attrs:
            return
        s = self._s
        disabled = False
        for a in parsed:
            if a.name != "disable-tracking":
                continue
            value = "true" if a.value is None else html.unescape(a.value).strip().lower()
            disabled = disabled or value == "true"
            end = a.value_end + len(a.quote)
            start = a.name_start
            # Take the whitespace before it too, unless that would glue two attributes.
            if end == len(text) or text[end].isspace() or text[end] in "/>":
                while start > 0 and text[start - 1].isspace():
                    start -= 1
            s.edits.append(_Slot(pos + start, pos + end, _DROP))
        href = next((a for a in parsed if a.name == "href"), None)
        if disabled or href is None or href.value is None:
            return
        url = _target(html.unescape(href.value), s.base)
        if url is not None:
            start, end = pos + href.value_start, pos + href.value_end
            s.edits.append(_Slot(start, end, _HREF, href.quote, Link(-1, url, "")))

    def handle_endtag(self, tag: str) -> None:
        s = self._s
        if s.skip is not None:
            if tag == s.skip:
                s.skip = None
            return
        if not self._top or tag not in ("body", "html", "head"):
            return
        pos = self._abs_pos()
        if s.doc[pos : pos + 2 + len(tag)].lower() != "</" + tag:
            return  # e.g. the end half of a self-closing <body/>
        if tag == "body":
            s.body_close = pos
        elif tag == "html":
            s.html_close = pos
        elif s.head_close is None and (gt := s.doc.find(">", pos)) >= 0:
            s.head_close = gt + 1

    def handle_comment(self, data: str) -> None:
        s = self._s
        pos = self._abs_pos() + 4
        if s.skip is not None or not s.doc.startswith(data, pos) or s.doc[pos - 4 : pos] != "<!--":
            return
        cond = _CONDITIONAL.match(data)
        if cond is None:
            return  # an ordinary comment: nothing in it is rendered
        # Outlook renders a conditional comment's content as HTML, so scan it too.
        endif = _ENDIF.search(data)
        _scan(s, pos + cond.end(), pos + (endif.start() if endif else len(data)), top=False)
        s.skip = None  # an unclosed <textarea> in the comment must not hide what follows


def _scan(state: _State, start: int, end: int, top: bool) -> None:
    """Scan ``state.doc[start:end]``; after a parser error, resume just past its position."""
    while start < end:
        scanner = _Scanner(state, start, top)
        try:
            scanner.feed(state.doc[start:end])
            scanner.close()
            return
        except Exception:  # malformed markup must never abort a send
            start = max(scanner._abs_pos(), start) + 1


@dataclass(frozen=True, slots=True)
class HtmlPlan:
    """A document analysed once, ready to be rendered for each recipient."""

    links: tuple[Link, ...]
    _chunks: tuple[str, ...] = field(repr=False)  # source text around the slots
    _slots: tuple[_Slot, ...] = field(repr=False)

    def render(
        self,
        click_url: Callable[[Link], str] | None,
        pixel_url: str | None,
        pixel_top: bool = False,
    ) -> str:
        """Return the document with tracking URLs from ``click_url`` and an open pixel."""
        pixel = pixel_tag(pixel_url) if pixel_url is not None else ""
        chunks = self._chunks
        out = [chunks[0]]
        for i, slot in enumerate(self._slots, 1):
            kind = slot.kind
            if kind == _HREF:
                link = slot.link
                out.append(link.raw if click_url is None else _attr(click_url(link), slot.quote))
            elif kind == _TOP if pixel_top else kind == _BOTTOM:
                out.append(pixel)
            out.append(chunks[i])
        return "".join(out)


def plan_html(html: str) -> HtmlPlan:
    """Find trackable links and pixel positions in an HTML document."""
    state = _State(html, [m.start() for m in re.finditer("\n", html)])
    _scan(state, 0, len(html), top=True)
    opens = (state.body_open, state.head_close, state.html_open)
    top = next((p for p in opens if p is not None), 0)
    bottom = next((p for p in (state.body_close, state.html_close) if p is not None), len(html))
    slots = [_Slot(top, top, _TOP), _Slot(bottom, bottom, _BOTTOM)]
    links: list[Link] = []
    last = 0
    # Sorting interleaves nested (conditional-comment) edits; overlaps should be impossible,
    # but dropping one is safer than emitting a corrupt document.
    for edit in sorted(state.edits, key=lambda e: (e.start, e.end)):
        if edit.start < last:
            continue
        last = edit.end
        if edit.kind == _HREF:
            link = Link(len(links), edit.link.url, html[edit.start : edit.end])
            links.append(link)
            edit = edit._replace(link=link)
        slots.append(edit)
    slots.sort(key=lambda slot: (slot.start, slot.end))
    chunks, prev = [], 0
    for slot in slots:
        chunks.append(html[prev : slot.start])
        prev = slot.end
    chunks.append(html[prev:])
    return HtmlPlan(tuple(links), tuple(chunks), tuple(slots))


# --- Plain text -------------------------------------------------------------------------

_TEXT_URL = re.compile(r"(?<![A-Za-z0-9+.\-])https?://[^\s<>\"]+", re.I)
_TRAILING = ".,;:!?'\""
_OPENER = {")": "(", "]": "["}


def _trim(url: str) -> str:
    """Drop trailing punctuation and unbalanced closing brackets that end a sentence."""
    while url and (
        url[-1] in _TRAILING
        or (url[-1] in _OPENER and url.count(url[-1]) > url.count(_OPENER[url[-1]]))
    ):
        url = url[:-1]
    return url


@dataclass(frozen=True, slots=True)
class TextPlan:
    """A plain-text body analysed once, ready to be rendered for each recipient."""

    links: tuple[Link, ...]
    _chunks: tuple[str, ...] = field(repr=False)  # source text around the links

    def render(self, click_url: Callable[[Link], str]) -> str:
        """Return the text with every tracked URL replaced by ``click_url(link)``."""
        pairs = zip(self.links, self._chunks[1:], strict=True)
        return self._chunks[0] + "".join(click_url(link) + chunk for link, chunk in pairs)


def plan_text(text: str) -> TextPlan:
    """Find trackable http(s) URLs in plain text."""
    links: list[Link] = []
    chunks: list[str] = []
    prev = 0
    for m in _TEXT_URL.finditer(text):
        url = _trim(m.group())
        if _target(url, None) != url:
            continue
        chunks.append(text[prev : m.start()])
        links.append(Link(len(links), url, url))
        prev = m.start() + len(url)
    chunks.append(text[prev:])
    return TextPlan(tuple(links), tuple(chunks))
