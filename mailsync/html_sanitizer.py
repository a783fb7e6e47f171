"""Make attacker-controlled email HTML safe to embed in our pages.

Anyone can send a mailbox owner an email, so the HTML part of a message is
hostile input. It is stored as received (see ``mailsync.parsing``) and run
through :func:`sanitize_email_html` on display, so a tightened policy applies to
every stored message retroactively.

Policy, with the reason for each choice:

* An allow-list of formatting tags (text, lists, tables, headings, quotes).
  Everything that can run code, load or submit content, or restyle our page
  (script, style, iframe, object, embed, form controls, svg, math, meta, base,
  link) is removed; the script/style/... family together with its content.
* No ``style``, ``class`` or ``id`` attributes: inline CSS can load remote
  resources (``background:url(...)``) and overlay our UI, classes would pick up
  our stylesheet, ids can clobber DOM globals.
* Links: only ``http``, ``https`` and ``mailto``; never relative (a relative
  link would point into this application). Every link gets
  ``rel="noopener noreferrer nofollow"`` and ``target="_blank"``.
* Images: remote images are tracking pixels that tell the sender when, where
  and that the message was read, so only inline ``data:image/...`` raster
  images keep their ``src``. ``cid:`` references to attachments are dropped too
  (they would need an attachment endpoint). An ``img`` without ``src`` still
  shows its ``alt`` text.
* Comments are dropped (Outlook conditional comments carry markup).

:func:`sandboxed_frame` is the one way our pages embed it: in an ``<iframe srcdoc>``
sandboxed without scripts and without our origin, where links may open a new tab
(outside the sandbox) and nothing remote loads.
"""

from __future__ import annotations

import html as html_module
import re
from html.parser import HTMLParser

import nh3
from django.utils.html import escape, format_html

__all__ = ["html_to_text", "sandboxed_frame", "sanitize_email_html"]

_ALLOWED_TAGS = frozenset(
    {
        "a", "abbr", "b", "blockquote", "br", "caption", "center", "code", "col",
        "colgroup", "dd", "del", "div", "dl", "dt", "em", "font", "h1", "h2", "h3",
        "h4", "h5", "h6", "hr", "i", "img", "ins", "li", "ol", "p", "pre", "q", "s",
        "small", "span", "strike", "strong", "sub", "sup", "table", "tbody", "td",
        "tfoot", "th", "thead", "tr", "u", "ul",
    }
)  # fmt: skip

# Removed together with everything inside them: their content is code, styling
# or document metadata, never message text worth showing.
_CLEAN_CONTENT_TAGS = frozenset(
    {
        "script", "style", "iframe", "frame", "frameset", "object", "embed", "applet",
        "noscript", "noembed", "noframes", "template", "title", "head", "svg", "math",
        "select", "textarea", "button", "xmp", "plaintext",
    }
)  # fmt: skip

_TABLE_CELL_ATTRIBUTES = {"colspan", "rowspan", "align", "valign", "width", "height"}
_ALLOWED_ATTRIBUTES: dict[str, set[str]] = {
    "a": {"href", "title"},
    "img": {"src", "alt", "width", "height", "title"},
    "abbr": {"title"},
    "table": {"border", "cellpadding", "cellspacing", "width", "align"},
    "td": _TABLE_CELL_ATTRIBUTES,
    "th": _TABLE_CELL_ATTRIBUTES,
    "tr": {"align", "valign"},
    "col": {"span", "width"},
    "colgroup": {"span", "width"},
    "p": {"align"},
    "div": {"align"},
    "h1": {"align"},
    "h2": {"align"},
    "h3": {"align"},
    "h4": {"align"},
    "h5": {"align"},
    "h6": {"align"},
    "font": {"color", "size", "face"},
    "ol": {"start", "type"},
}

_SURROGATE_RE = re.compile("[\ud800-\udfff]")

# "data" is needed here only so that data: images survive ammonia's scheme
# check; _filter_attribute then removes data: from everything but <img src>.
_URL_SCHEMES = frozenset({"http", "https", "mailto", "data"})

# Raster formats only: an SVG can carry script and links of its own.
_DATA_IMAGE_RE = re.compile(r"data:image/(?:png|gif|jpe?g|webp|bmp);", re.IGNORECASE)


def _filter_attribute(tag: str, attribute: str, value: str) -> str | None:
    """Second pass after ammonia's own checks: the image and data: URL policy."""
    if tag == "img" and attribute == "src":
        return value if _DATA_IMAGE_RE.match(value.strip()) else None
    if attribute == "href" and value.strip().lower().startswith("data:"):
        return None
    return value


_CLEANER = nh3.Cleaner(
    tags=set(_ALLOWED_TAGS),
    clean_content_tags=set(_CLEAN_CONTENT_TAGS),
    attributes=_ALLOWED_ATTRIBUTES,
    attribute_filter=_filter_attribute,
    strip_comments=True,
    link_rel="noopener noreferrer nofollow",
    set_tag_attribute_values={"a": {"target": "_blank"}},
    url_schemes=set(_URL_SCHEMES),
    url_relative="deny",
)


def sanitize_email_html(html: str) -> str:
    """Return ``html`` reduced to the safe subset described in the module docstring.

    The result may be marked safe and embedded in a page. Empty or missing input
    gives ``""``.
    """
    if not html:
        return ""
    return _CLEANER.clean(_prepare(html))


# Inside the frame: remote content (tracking pixels, fonts) stays unloaded, links open
# a new tab, and the text gets a readable default look.
_FRAME_HEAD = (
    '<meta http-equiv="Content-Security-Policy" '
    "content=\"default-src 'none'; img-src data:; style-src 'unsafe-inline'\">"
    '<base target="_blank">'
    "<style>body{margin:.5rem;font:15px/1.5 system-ui,sans-serif;color:#1f2328;"
    "overflow-wrap:anywhere}img{max-width:100%;height:auto}</style>"
)
# No allow-scripts (nothing runs) and no allow-same-origin (the frame cannot reach our
# cookies or DOM); popups only so that a link opens in a new tab, unsandboxed there.
FRAME_SANDBOX = "allow-popups allow-popups-to-escape-sandbox"


def sandboxed_frame(html: str, title: str, css_class: str = "email-html", style: str = "") -> str:
    """An ``<iframe>`` showing ``html`` sanitized, sandboxed (see FRAME_SANDBOX)."""
    document = _FRAME_HEAD + sanitize_email_html(html)
    # escape() (not conditional_escape) so that even a SafeString is quoted into the
    # attribute.
    return format_html(
        '<iframe class="{}" sandbox="{}" referrerpolicy="no-referrer" title="{}" '
        'srcdoc="{}"{}></iframe>',
        css_class,
        FRAME_SANDBOX,
        title,
        escape(str(document)),
        format_html(' style="{}"', style) if style else "",
    )


def _prepare(html: str) -> str:
    """Remove what neither the sanitizer nor the page can carry.

    NUL is not valid in HTML (dropped so it cannot split tokens differently for
    the sanitizer and the browser); a lone surrogate cannot be encoded as UTF-8
    and makes nh3 raise.
    """
    return _SURROGATE_RE.sub("\ufffd", html.replace("\x00", ""))


# --- Plain-text rendering ---------------------------------------------------------

# Elements that start and end on a line of their own...
_LINE_TAGS = frozenset(
    {
        "address", "article", "aside", "caption", "dd", "div", "dt", "footer", "header",
        "li", "main", "nav", "section", "tr",
    }
)  # fmt: skip
# ...and those that are also set off by a blank line, as a browser shows them.
_PARAGRAPH_TAGS = frozenset(
    {"blockquote", "dl", "h1", "h2", "h3", "h4", "h5", "h6", "hr", "ol", "p", "pre", "table",
     "ul"}
)  # fmt: skip
_CELL_TAGS = frozenset({"td", "th"})
# Not "head": mail often omits </head>, which would then hide the whole body.
_INVISIBLE_TAGS = frozenset({"script", "style", "title", "template"})

_WHITESPACE_RE = re.compile(r"\s+")
_UNFINISHED_TAG_RE = re.compile(r"</?[A-Za-z]|<!")
_ANY_TAG_RE = re.compile(r"<[^>]*>?")
_HORIZONTAL_SPACE_RE = re.compile(r"[^\S\n]+")


class _TextExtractor(HTMLParser):
    """Collects visible text, with line breaks where a browser would break lines.

    ``chunks`` holds text and, as ints, requested line breaks; breaks that meet
    merge (the larger wins, except that each <br> adds one), so nested blocks do
    not pile up empty lines.
    """

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.chunks: list[str | int] = []
        self._hidden_depth = 0
        self._pre_depth = 0

    def _break(self, newlines: int, *, additive: bool = False) -> None:
        if self.chunks and isinstance(self.chunks[-1], int):
            previous = self.chunks[-1]
            self.chunks[-1] = min(2, previous + newlines) if additive else max(previous, newlines)
        else:
            self.chunks.append(newlines)

    def _block(self, tag: str) -> None:
        if tag == "br":
            self._break(1, additive=True)
        elif tag in _PARAGRAPH_TAGS:
            self._break(2)
        elif tag in _LINE_TAGS:
            self._break(1)
        elif tag in _CELL_TAGS:
            self.chunks.append(" ")

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag in _INVISIBLE_TAGS:
            self._hidden_depth += 1
            return
        if tag == "pre":
            self._pre_depth += 1
        if tag not in _CELL_TAGS:
            self._block(tag)

    def handle_startendtag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        # <br/>, <p/>: a self-closed element hides nothing and opens nothing.
        if tag not in _INVISIBLE_TAGS and tag not in _CELL_TAGS:
            self._block(tag)

    def handle_endtag(self, tag: str) -> None:
        if tag in _INVISIBLE_TAGS:
            self._hidden_depth = max(0, self._hidden_depth - 1)
            return
        if tag == "pre":
            self._pre_depth = max(0, self._pre_depth - 1)
        if tag != "br":  # "</br>" is treated as <br> by browsers; one break is enough
            self._block(tag)

    def parse_marked_section(self, i: int, report: int = 1) -> int:
        """Treat ``<![...`` as a bogus comment ending at ``>``, as HTML5 does.

        Outlook's ``<![if !supportLists]>`` is common in mail, and the stdlib
        implementation (meant for SGML) raises AssertionError on such input.
        """
        end = self.rawdata.find(">", i + 3)
        return -1 if end < 0 else end + 1

    def handle_data(self, data: str) -> None:
        if self._hidden_depth:
            return
        if self._pre_depth:
            self.chunks.append(data.replace("\r\n", "\n"))
        else:
            # Outside <pre>, line breaks in the source are ordinary whitespace.
            self.chunks.append(_WHITESPACE_RE.sub(" ", data))

    def text(self) -> str:
        out: list[str] = []
        pending = 0
        for chunk in self.chunks:
            if isinstance(chunk, int):
                pending = max(pending, chunk)
                continue
            if pending:
                if not chunk.strip():
                    continue  # whitespace between blocks
                if out:
                    out.append("\n" * pending)
                pending = 0
            out.append(chunk)
        lines = (_HORIZONTAL_SPACE_RE.sub(" ", line).strip() for line in "".join(out).split("\n"))
        return re.sub(r"\n{3,}", "\n\n", "\n".join(lines)).strip()


def html_to_text(html: str) -> str:
    """Plain-text rendering of email HTML for text-only display and previews.

    Tags are stripped, entities unescaped and whitespace collapsed to single
    spaces, except that block elements (p, div, br, li, tr, ...) become line
    breaks and paragraphs are separated by one blank line, so the text keeps
    its shape. Script, style and title content is not text and is dropped.
    Never raises; empty input gives ``""``.
    """
    if not html:
        return ""
    parser = _TextExtractor()
    try:
        parser.feed(_prepare(html))
        # A tag, comment or declaration cut off by the end of input ("... <div",
        # "<!-- ...") shows nothing in a browser, but html.parser would emit it
        # as text on close().
        if _UNFINISHED_TAG_RE.match(parser.rawdata):
            parser.rawdata = ""
        parser.close()
    except (AssertionError, ValueError):
        # html.parser still has SGML-era assertions for odd declarations; a
        # crude tag strip is better than failing to show the message at all.
        text = html_module.unescape(_ANY_TAG_RE.sub(" ", _prepare(html)))
        return _HORIZONTAL_SPACE_RE.sub(" ", _WHITESPACE_RE.sub(" ", text)).strip()
    return parser.text()
