"""mailsync.html_sanitizer: hostile email HTML made safe to show, and HTML to text."""

from __future__ import annotations

import pytest

from mailsync import html_sanitizer
from mailsync.html_sanitizer import html_to_text, sanitize_email_html

LINK_ATTRS = 'target="_blank" rel="noopener noreferrer nofollow"'


@pytest.mark.parametrize("value", ["", None])
def test_empty_input(value: str | None) -> None:
    assert sanitize_email_html(value) == ""  # type: ignore[arg-type]
    assert html_to_text(value) == ""  # type: ignore[arg-type]


def test_safe_formatting_is_kept() -> None:
    html = (
        "<div><p>Hello <b>bold</b> <i>it</i> <u>u</u> <strong>s</strong> <em>e</em><br>"
        "next</p><ul><li>one</li></ul><ol><li>two</li></ol>"
        '<table border="1"><thead><tr><th>h</th></tr></thead>'
        '<tbody><tr><td colspan="2">c</td></tr></tbody></table>'
        "<blockquote>quoted</blockquote><span>s</span></div>"
    )
    assert sanitize_email_html(html) == html


@pytest.mark.parametrize(
    "html",
    [
        "<script>alert(1)</script>",
        "<SCRIPT SRC=https://evil.example/x.js></SCRIPT>",
        "<scr<script>ipt>alert(1)</script>",
        "<svg><script>alert(1)</script></svg>",
        "<svg onload=alert(1)>",
        "<math><mtext><script>alert(1)</script></mtext></math>",
    ],
)
def test_scripts_are_removed_with_their_content(html: str) -> None:
    cleaned = sanitize_email_html(f"<p>before</p>{html}<p>after</p>")
    # Leftovers of broken-up tags may survive, but only as escaped text.
    for tag in ("<script", "<svg", "<math", "onload"):
        assert tag not in cleaned.lower()
    assert "<p>before</p>" in cleaned
    assert "<p>after</p>" in cleaned


@pytest.mark.parametrize(
    "html",
    [
        '<img src="x" onerror="alert(1)">',
        '<p onclick="alert(1)">x</p>',
        '<a href="https://ok.example" onmouseover="alert(1)">x</a>',
        '<body onload="alert(1)">x</body>',
        '<div ONFOCUS="alert(1)" tabindex=1>x</div>',
    ],
)
def test_event_handlers_are_removed(html: str) -> None:
    cleaned = sanitize_email_html(html)
    assert "alert" not in cleaned
    assert " on" not in cleaned.lower()


@pytest.mark.parametrize(
    "href",
    [
        "javascript:alert(1)",
        "JaVaScRiPt:alert(1)",
        " javascript:alert(1)",
        "jav&#x09;ascript:alert(1)",
        "&#106;avascript:alert(1)",
        "vbscript:msgbox(1)",
        "data:text/html;base64,PHNjcmlwdD5hbGVydCgxKTwvc2NyaXB0Pg==",
        "/relative/path",
        "../up",
        "//protocol-relative.example/x",
    ],
)
def test_dangerous_and_relative_hrefs_are_removed(href: str) -> None:
    cleaned = sanitize_email_html(f'<a href="{href}">click</a>')
    assert "href" not in cleaned
    assert cleaned.startswith("<a ")
    assert cleaned.endswith(">click</a>")
    assert 'target="_blank"' in cleaned


@pytest.mark.parametrize(
    "href", ["https://example.com/a?b=1&amp;c=2", "http://example.com/", "mailto:bob@example.com"]
)
def test_safe_links_get_rel_and_target(href: str) -> None:
    cleaned = sanitize_email_html(f'<a href="{href}" target="_self" rel="opener">x</a>')
    assert cleaned == f'<a href="{href}" {LINK_ATTRS}>x</a>'


@pytest.mark.parametrize(
    "html",
    [
        '<iframe src="https://evil.example/">inner</iframe>',
        '<object data="https://evil.example/x.swf">inner</object>',
        '<embed src="https://evil.example/x.swf">',
        "<frameset><frame src='https://evil.example/'></frameset>",
    ],
)
def test_embedded_content_is_removed(html: str) -> None:
    cleaned = sanitize_email_html(f"<p>keep</p>{html}")
    assert cleaned == "<p>keep</p>"


def test_style_tags_and_attributes_are_removed() -> None:
    html = (
        "<style>body { background: url(https://track.example/p.gif) }</style>"
        '<p style="position:fixed;background:url(https://track.example/q.gif)" '
        'class="x" id="y">text</p>'
        '<link rel="stylesheet" href="https://evil.example/x.css">'
    )
    assert sanitize_email_html(html) == "<p>text</p>"


def test_forms_and_document_level_tags_are_removed() -> None:
    html = (
        '<base href="https://evil.example/">'
        '<meta http-equiv="refresh" content="0;url=https://evil.example/">'
        "<title>Title</title>"
        '<form action="https://evil.example/steal" method="post">'
        '<p>Password:</p><input type="password" name="p"><button>Send</button>'
        "<textarea>t</textarea><select><option>o</option></select></form>"
    )
    cleaned = sanitize_email_html(html)
    assert cleaned == "<p>Password:</p>"


@pytest.mark.parametrize(
    "html",
    [
        '<img src="https://track.example/pixel.gif" width="1" height="1">',
        '<img src="http://track.example/pixel.gif">',
        '<img src="//track.example/pixel.gif">',
        '<img src="cid:part1.abc@example.com">',
        '<img src="data:image/svg+xml;base64,PHN2Zz48L3N2Zz4=">',
        '<img srcset="https://track.example/p.gif 1x">',
        '<table background="https://track.example/bg.gif"><tr><td>x</td></tr></table>',
        '<picture><source srcset="https://track.example/p.webp"></picture>',
        '<video poster="https://track.example/p.jpg"></video>',
        '<audio src="https://track.example/p.mp3"></audio>',
    ],
)
def test_remote_images_are_dropped(html: str) -> None:
    cleaned = sanitize_email_html(html)
    assert "track.example" not in cleaned
    assert "src=" not in cleaned


def test_remote_image_keeps_its_alt_text() -> None:
    cleaned = sanitize_email_html('<img src="https://track.example/logo.png" alt="ACME logo">')
    assert cleaned == '<img alt="ACME logo">'


def test_inline_data_images_are_kept() -> None:
    html = '<img src="data:image/png;base64,iVBORw0KGgo=" alt="logo" width="10" height="20">'
    assert sanitize_email_html(html) == html


def test_comments_are_removed() -> None:
    html = "<!--[if mso]><script>alert(1)</script><![endif]--><p>x</p><!-- note -->"
    assert sanitize_email_html(html) == "<p>x</p>"


def test_full_documents_are_reduced_to_the_body() -> None:
    html = (
        "<!DOCTYPE html><html><head><meta charset='utf-8'><title>T</title>"
        "<style>p{}</style></head><body><p>Hi</p></body></html>"
    )
    assert sanitize_email_html(html) == "<p>Hi</p>"


def test_text_is_escaped_and_nul_is_removed() -> None:
    assert sanitize_email_html("a < b & c > d\x00e") == "a &lt; b &amp; c &gt; de"


# --- html_to_text -------------------------------------------------------------------


def test_html_to_text_strips_tags_and_unescapes_entities() -> None:
    assert html_to_text("<b>Fish</b> &amp; <i>chips</i> &lt;3 &copy; &#8364;5") == (
        "Fish & chips <3 © €5"
    )


def test_html_to_text_collapses_whitespace() -> None:
    assert html_to_text("  lots \n\n of\t\twhite&nbsp;&nbsp;space  ") == "lots of white space"


def test_html_to_text_keeps_block_structure() -> None:
    html = (
        "<html><head><style>p { color: red }</style><title>Subject</title></head><body>"
        "<h1>Title</h1>\n<p>First   paragraph.</p>\n<p>Second<br>line</p>"
        "<ul>\n<li>one</li>\n<li>two</li>\n</ul>"
        "<table><tr><td>a</td><td>b</td></tr><tr><td>c</td></tr></table>"
        "<div><div>nested</div></div>end"
        "<script>var hidden = 1;</script></body></html>"
    )
    assert html_to_text(html) == (
        "Title\n\nFirst paragraph.\n\nSecond\nline\n\none\ntwo\n\na b\nc\n\nnested\nend"
    )


def test_html_to_text_preformatted_text_keeps_line_breaks() -> None:
    assert html_to_text("<pre>line 1\nline 2</pre>") == "line 1\nline 2"


def test_html_to_text_survives_broken_markup() -> None:
    assert html_to_text("<p>unclosed <b>bold <i>and <div") == "unclosed bold and"
    assert html_to_text("<head><title>t</title><p>no closing head") == "no closing head"
    assert html_to_text("a</p></div></script>b") == "a\n\nb"
    assert html_to_text("<<>>&&;;&#xZZ;") is not None


def test_lone_surrogates_do_not_break_either_function() -> None:
    assert sanitize_email_html("<p>bad \ud800 char</p>") == "<p>bad \ufffd char</p>"
    assert html_to_text("<p>bad \ud800 char</p>") == "bad \ufffd char"


def test_html_to_text_outlook_marked_sections() -> None:
    # Word/Outlook HTML: "<![if ...]>" sections, which html.parser asserts on.
    html = "<p>list:</p><![if !supportLists]><span>1.</span><![endif]>item <![if]<x"
    assert html_to_text(html) == "list:\n\n1.item"


def test_html_to_text_falls_back_to_a_crude_strip(monkeypatch: pytest.MonkeyPatch) -> None:
    def broken_feed(self: object, data: str) -> None:
        raise AssertionError("html.parser gave up")

    monkeypatch.setattr(html_sanitizer._TextExtractor, "feed", broken_feed)
    assert html_to_text("<p>Fish &amp;\n<b>chips</b></p>") == "Fish & chips"
