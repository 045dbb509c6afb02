"""Rewrite links and insert an open pixel in outgoing mail bodies.

The work is split in two because it runs once per recipient: ``plan_html``/``plan_text``
analyse a document once, and the plan's ``render`` produces each recipient's copy with
string joins only. The document is never re-serialised: every character outside the
rewritten attribute values, the removed ``disable-tracking`` attributes and the inserted
pixel is emitted exactly as the sender wrote it.
"""

from __future__ import annotations

import html
import re
from collections.abc import Callable
from dataclasses import dataclass, field
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
    # Tracking URLs seldom hold any of & < > " ': five scans are cheaper than escaping.
    if "&" in url or "<" in url or ">" in url or '"' in url or "'" in url:
        value = html.escape(url)  # escapes & < > " ' so it is safe in any quoting style
    else:
        value = url
    if quote or _UNQUOTED_SAFE.fullmatch(value):
        return value
    return f'"{value}"'


# --- HTML scanning ---------------------------------------------------------------------
#
# A tokenizer after the HTML standard's (the states browsers use), reduced to what
# rewriting needs: start tags with their attributes, end tags, comments, raw text. It
# only moves forward: every character is looked at a bounded number of times, so the
# scan is linear in the document whatever it holds (html.parser went back over the rest
# of the document at each unclosed construct: 10 MB of "<a" took minutes). A tag,
# comment or raw-text element left open at the end of the document holds the rest of it,
# as in a browser.

_WS = "\t\n\f\r "
_MARKUP = re.compile(r"<[A-Za-z!/?]")
_TAG_NAME = re.compile(r"[A-Za-z][^\t\n\f\r />]*")
_BEFORE_ATTR = re.compile(r"[\t\n\f\r /]*")
_ATTR_NAME = re.compile(r"[^\t\n\f\r />][^\t\n\f\r /=>]*")
_EQUALS = re.compile(r"[\t\n\f\r ]*=[\t\n\f\r ]*")
_UNQUOTED = re.compile(r"[^\t\n\f\r >]*")
_COMMENT_END = re.compile(r"--!?>")
_CONDITIONAL = re.compile(r"\s*\[if\s[^\]]*\]\s*>", re.I)
_ENDIF = re.compile(r"<!\[endif\]\s*$", re.I)
# Elements whose content browsers do not parse as markup.
_RAW_TEXT = frozenset(
    {"script", "style", "textarea", "title", "xmp", "iframe", "noembed", "noframes", "plaintext"}
)
_RAW_END = {name: re.compile(rf"</{name}(?=[\t\n\f\r />])", re.I) for name in _RAW_TEXT}

# _VARIABLE: an href holding a per-recipient placeholder, resolved at each render.
_HREF, _DROP, _TOP, _BOTTOM, _VARIABLE = range(5)


class _Attr(NamedTuple):
    name: str  # lowercased
    value: str | None  # raw, without quotes
    name_start: int  # offsets in the document
    value_start: int
    value_end: int
    quote: str  # '"', "'" or "" (unquoted)


class _Slot(NamedTuple):
    start: int
    end: int
    kind: int
    quote: str = ""
    link: Link = Link(-1, "", "")  # an _HREF's target; index and raw are filled in last


class _Tag(NamedTuple):
    name: str  # lowercased
    attrs: list[_Attr]
    start: int
    end: int  # just past its ">"


def _read_tag(doc: str, start: int, end: int, name_at: int) -> _Tag | None:
    """The tag whose name starts at ``name_at``; None when it is not closed before ``end``."""
    m = _TAG_NAME.match(doc, name_at, end)
    assert m is not None
    name, k = m.group().lower(), m.end()
    attrs: list[_Attr] = []
    while True:
        k = _BEFORE_ATTR.match(doc, k, end).end()  # type: ignore[union-attr]
        if k >= end:
            return None
        if doc[k] == ">":
            return _Tag(name, attrs, start, k + 1)
        m = _ATTR_NAME.match(doc, k, end)
        assert m is not None
        name_start, k = m.start(), m.end()
        value, quote, vstart, vend = None, "", k, k
        eq = _EQUALS.match(doc, k, end)
        if eq is not None:
            k = eq.end()
            if k >= end:
                return None
            if doc[k] in "\"'":
                quote = doc[k]
                close = doc.find(quote, k + 1, end)
                if close < 0:
                    return None
                vstart, vend, k = k + 1, close, close + 1
            else:
                vstart, k = k, _UNQUOTED.match(doc, k, end).end()  # type: ignore[union-attr]
                vend = k
            value = doc[vstart:vend]
        attrs.append(_Attr(m.group().lower(), value, name_start, vstart, vend, quote))


@dataclass
class _State:
    """Everything collected while scanning one document (shared by nested scans)."""

    doc: str
    variables: re.Pattern[str] | None  # per-recipient placeholders, filled in at render
    base: str | None = None
    edits: list[_Slot] = field(default_factory=list)
    body_open: int | None = None  # end of first <body>
    head_close: int | None = None  # end of first </head>
    html_open: int | None = None  # end of first <html>
    body_close: int | None = None  # start of last </body>
    html_close: int | None = None  # start of last </html>


def _scan(s: _State, start: int, end: int, top: bool) -> None:
    """Scan ``s.doc[start:end]``; ``top`` is false inside a conditional comment, where
    the pixel is not placed and comments are not scanned again."""
    doc, k = s.doc, start
    while (m := _MARKUP.search(doc, k, end)) is not None:
        lt, kind = m.start(), doc[m.start() + 1]
        if kind == "!":
            if doc.startswith("<!--", lt):
                k = _comment(s, lt, end, top)
            else:  # <!DOCTYPE>, <![if]>, <![CDATA[...]]>: a bogus comment up to ">"
                k = doc.find(">", lt, end) + 1
        elif kind == "?":
            k = doc.find(">", lt, end) + 1
        elif kind == "/":
            if lt + 2 < end and doc[lt + 2].isascii() and doc[lt + 2].isalpha():
                tag = _read_tag(doc, lt, end, lt + 2)
                if tag is None:
                    return
                if top:
                    _end_tag(s, tag)
                k = tag.end
            else:  # "</>" is dropped, "</3" a bogus comment
                k = doc.find(">", lt, end) + 1
        else:
            tag = _read_tag(doc, lt, end, lt + 1)
            if tag is None:
                return
            k = tag.end
            _start_tag(s, tag, top)
            if tag.name in _RAW_TEXT:
                raw_end = _RAW_END[tag.name].search(doc, k, end)
                if raw_end is None or tag.name == "plaintext":
                    return
                k = raw_end.start()
        if k <= 0:  # no ">": the rest of the document is inside the construct
            return


def _comment(s: _State, lt: int, end: int, top: bool) -> int:
    """Handle the comment at ``lt``; returns where scanning goes on (0: nowhere)."""
    doc, data_start = s.doc, lt + 4
    if doc.startswith(">", data_start) or doc.startswith("->", data_start):
        return doc.find(">", data_start) + 1  # "<!-->" and "<!--->" are empty comments
    close = _COMMENT_END.search(doc, data_start, end)
    data_end = close.start() if close is not None else end
    cond = _CONDITIONAL.match(doc, data_start, data_end) if top else None
    if cond is not None:
        # Outlook renders a conditional comment's content as HTML, so scan it too.
        endif = _ENDIF.search(doc, cond.end(), data_end)
        _scan(s, cond.end(), endif.start() if endif else data_end, top=False)
    return close.end() if close is not None else 0


def _start_tag(s: _State, tag: _Tag, top: bool) -> None:
    name = tag.name
    if name == "a" or name == "area" or name.startswith("v:"):
        _link(s, tag)
    elif name == "base" and s.base is None:
        s.base = next((html.unescape(a.value).strip() for a in tag.attrs
                       if a.name == "href" and a.value), None)
    elif top and name == "body" and s.body_open is None:
        s.body_open = tag.end
    elif top and name == "html" and s.html_open is None:
        s.html_open = tag.end


def _end_tag(s: _State, tag: _Tag) -> None:
    if tag.name == "body":
        s.body_close = tag.start
    elif tag.name == "html":
        s.html_close = tag.start
    elif tag.name == "head" and s.head_close is None:
        s.head_close = tag.end


def _link(s: _State, tag: _Tag) -> None:
    doc = s.doc
    disabled = False
    seen: set[str] = set()
    attrs = []
    for a in tag.attrs:  # a repeated attribute is ignored, as browsers do
        if a.name not in seen:
            seen.add(a.name)
            attrs.append(a)
        if a.name != "disable-tracking":
            continue
        value = "true" if a.value is None else html.unescape(a.value).strip().lower()
        disabled = disabled or value == "true"
        drop_end = a.value_end + len(a.quote)
        drop_start = a.name_start
        # Take the whitespace before it too, unless that would glue two attributes.
        if drop_end >= tag.end - 1 or doc[drop_end] in _WS + "/>":
            while drop_start > tag.start and doc[drop_start - 1] in _WS:
                drop_start -= 1
        s.edits.append(_Slot(drop_start, drop_end, _DROP))
    href = next((a for a in attrs if a.name == "href"), None)
    if disabled or href is None or href.value is None:
        return
    if s.variables is not None and s.variables.search(href.value):
        s.edits.append(_Slot(href.value_start, href.value_end, _VARIABLE, href.quote))
        return
    url = _target(html.unescape(href.value), s.base)
    if url is not None:
        s.edits.append(_Slot(href.value_start, href.value_end, _HREF, href.quote,
                             Link(-1, url, "")))


@dataclass(frozen=True, slots=True)
class HtmlPlan:
    """A document analysed once, ready to be rendered for each recipient."""

    links: tuple[Link, ...]  # tracked links (those with placeholders are not known yet)
    _chunks: tuple[str, ...] = field(repr=False)  # source text around the slots
    _slots: tuple[_Slot, ...] = field(repr=False)
    _filled: frozenset[int] = field(repr=False, default=frozenset())  # chunks to fill
    _base: str | None = field(repr=False, default=None)

    def render(
        self,
        click_url: Callable[[Link], str] | None,
        pixel_url: str | None,
        pixel_top: bool = False,
        fill: Callable[[str], str] | None = None,
    ) -> str:
        """Return the document with tracking URLs from ``click_url`` and an open pixel;
        ``fill`` replaces the placeholders of the ``variables`` given to plan_html."""
        pixel = pixel_tag(pixel_url) if pixel_url is not None else ""
        chunks = self._chunks
        filled = self._filled if fill is not None else frozenset()
        out = [fill(chunks[0]) if 0 in filled and fill else chunks[0]]
        for i, slot in enumerate(self._slots, 1):
            kind = slot.kind
            if kind == _HREF:
                link = slot.link
                out.append(link.raw if click_url is None else _attr(click_url(link), slot.quote))
            elif kind == _VARIABLE:
                out.append(self._variable(slot, click_url, fill))
            elif kind == _TOP if pixel_top else kind == _BOTTOM:
                out.append(pixel)
            out.append(fill(chunks[i]) if i in filled and fill else chunks[i])
        return "".join(out)

    def _variable(self, slot: _Slot, click_url: Callable[[Link], str] | None,
                  fill: Callable[[str], str] | None) -> str:
        """An href with placeholders: filled in, then tracked if it is a URL to track
        (values are inserted as given, as if the sender had written them there)."""
        raw = slot.link.raw if fill is None else fill(slot.link.raw)
        url = _target(html.unescape(raw), self._base) if fill and click_url else None
        if url is None or click_url is None:
            return raw
        return _attr(click_url(Link(slot.link.index, url, raw)), slot.quote)


def plan_html(html: str, variables: re.Pattern[str] | None = None) -> HtmlPlan:
    """Find trackable links and pixel positions in an HTML document.

    ``variables`` matches per-recipient placeholders (e.g. ``%recipient.id%``): the
    document is planned once with them in place, and ``render(..., fill=...)`` fills
    them in for each recipient; an href holding one is tracked once filled in.
    """
    state = _State(html, variables)
    _scan(state, 0, len(html), top=True)
    opens = (state.body_open, state.head_close, state.html_open)
    top = next((p for p in opens if p is not None), 0)
    bottom = next((p for p in (state.body_close, state.html_close) if p is not None), len(html))
    slots = [_Slot(top, top, _TOP), _Slot(bottom, bottom, _BOTTOM)]
    links: list[Link] = []
    variable_links = 0
    last = 0
    # Sorting interleaves nested (conditional-comment) edits; overlaps should be impossible,
    # but dropping one is safer than emitting a corrupt document.
    for edit in sorted(state.edits, key=lambda e: (e.start, e.end)):
        if edit.start < last:
            continue
        last = edit.end
        if edit.kind == _HREF:
            link = Link(len(links) + variable_links, edit.link.url, html[edit.start : edit.end])
            links.append(link)
            edit = edit._replace(link=link)
        elif edit.kind == _VARIABLE:  # its index is taken, whatever it becomes
            edit = edit._replace(link=Link(len(links) + variable_links, "",
                                           html[edit.start : edit.end]))
            variable_links += 1
        slots.append(edit)
    slots.sort(key=lambda slot: (slot.start, slot.end))
    chunks, prev = [], 0
    for slot in slots:
        chunks.append(html[prev : slot.start])
        prev = slot.end
    chunks.append(html[prev:])
    filled = frozenset(i for i, chunk in enumerate(chunks)
                       if variables is not None and variables.search(chunk))
    return HtmlPlan(tuple(links), tuple(chunks), tuple(slots), filled, state.base)


# --- Plain text -------------------------------------------------------------------------

_TEXT_URL = re.compile(r"(?<![A-Za-z0-9+.\-])https?://[^\s<>\"]+", re.I)
_TRAILING = ".,;:!?'\""
_OPENER = {")": "(", "]": "["}


def _trim(url: str) -> str:
    """Drop trailing punctuation and unbalanced closing brackets that end a sentence."""
    end = len(url)
    # Only trailing punctuation and closers are dropped, so the openers never change.
    excess = {close: url.count(close) - url.count(open_) for close, open_ in _OPENER.items()}
    while end:
        last = url[end - 1]
        if last in _OPENER and excess[last] > 0:
            excess[last] -= 1
        elif last not in _TRAILING:
            break
        end -= 1
    return url[:end]


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
