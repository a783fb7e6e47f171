"""mailsync.parsing: Gmail message resources (full, raw, metadata, minimal) to stored fields.

Most tests write a real MIME message and convert it with :func:`gmail_full` into
the shape ``users.messages.get(format="full")`` returns, so the parser is
exercised on realistic trees rather than on hand-made dicts. Pure functions:
no database.
"""

from __future__ import annotations

import base64
import copy
import random
import time
from datetime import UTC, datetime
from email import policy
from email.header import decode_header, make_header
from email.message import EmailMessage, Message
from email.parser import BytesParser
from email.utils import format_datetime
from typing import Any

import pytest

from mailsync.parsing import (
    MAX_HEADER_CHARS,
    MAX_MESSAGE_ID_CHARS,
    MessageParseError,
    ParsedMessage,
    address_of,
    decode_header_value,
    parse_message,
)

# --- Helpers: build realistic Gmail resources -------------------------------------


def _b64url(data: bytes, *, padding: bool = True) -> str:
    text = base64.urlsafe_b64encode(data).decode("ascii")
    return text if padding else text.rstrip("=")


def _as_bytes(raw: bytes | str) -> bytes:
    return raw.encode("utf-8") if isinstance(raw, str) else raw


def _gmail_text(value: str) -> str:
    """Gmail's JSON carries text, not the parser's surrogate-escaped bytes."""
    return value.encode("ascii", "surrogateescape").decode("utf-8", "replace")


def _gmail_part(part: Message, part_id: str) -> dict[str, Any]:
    """One MessagePart the way Gmail's format=full shows it.

    Bodies are base64url of the transfer-decoded bytes; parts that are
    attachments carry an attachmentId instead of data; filenames are decoded.
    """
    filename = part.get_filename() or ""
    if filename:
        filename = str(make_header(decode_header(filename)))
    node: dict[str, Any] = {
        "partId": part_id,
        "mimeType": part.get_content_type(),
        "filename": filename,
        "headers": [{"name": n, "value": _gmail_text(v)} for n, v in part.raw_items()],
    }
    if part.is_multipart():
        node["body"] = {"size": 0}
        if part.get_content_type() == "message/rfc822":
            node["body"] = {"size": len(part.as_bytes()), "attachmentId": f"att-{part_id}"}
        node["parts"] = [
            _gmail_part(child, f"{part_id}.{i}" if part_id else str(i))
            for i, child in enumerate(part.get_payload())
        ]
        return node
    data = part.get_payload(decode=True) or b""
    body: dict[str, Any] = {"size": len(data)}
    if filename or part.get_content_disposition() == "attachment":
        body["attachmentId"] = f"att-{part_id or 'root'}"
    else:
        body["data"] = _b64url(data)
    node["body"] = body
    return node


def _resource(**fields: Any) -> dict[str, Any]:
    resource = {
        "id": "msg-1",
        "threadId": "thr-1",
        "labelIds": ["INBOX", "UNREAD"],
        "snippet": "snippet",
        "historyId": "4242",
        "internalDate": "1700000000123",
        "sizeEstimate": 1234,
    }
    resource.update(fields)
    return resource


def gmail_full(raw: bytes | str, **fields: Any) -> dict[str, Any]:
    """A format=full resource for the MIME message ``raw``."""
    msg = BytesParser(policy=policy.compat32).parsebytes(_as_bytes(raw))
    return _resource(payload=_gmail_part(msg, ""), **fields)


def gmail_raw(raw: bytes | str, **fields: Any) -> dict[str, Any]:
    """A format=raw resource for the MIME message ``raw``."""
    return _resource(raw=_b64url(_as_bytes(raw)), **fields)


def b_word(text: str, charset: str) -> str:
    return f"=?{charset}?B?{base64.b64encode(text.encode(charset)).decode()}?="


def q_word(text: str, charset: str) -> str:
    encoded = "".join(
        chr(b) if b < 0x80 and chr(b).isalnum() else "_" if b == 0x20 else f"={b:02X}"
        for b in text.encode(charset)
    )
    return f"=?{charset}?Q?{encoded}?="


def simple_message(subject: str = "Hello", body: str = "Hi there.\n", **headers: str) -> str:
    extra = "".join(f"{name.replace('_', '-')}: {value}\n" for name, value in headers.items())
    return (
        "From: Alice <alice@example.com>\n"
        "To: Bob <bob@example.com>, carol@example.com\n"
        f"Subject: {subject}\n"
        "Date: Tue, 14 Nov 2023 23:13:20 +0100\n"
        "Message-ID: <abc.123@example.com>\n"
        f"{extra}"
        "MIME-Version: 1.0\n"
        'Content-Type: text/plain; charset="utf-8"\n'
        "\n"
        f"{body}"
    )


def rich_email() -> EmailMessage:
    """multipart/mixed[alternative[plain, html], pdf] with non-ASCII everywhere."""
    msg = EmailMessage()
    msg["From"] = "Jörg Müller <jorg@example.com>"
    msg["To"] = "Bob <bob@example.com>, Zoë <zoe@example.com>"
    msg["Cc"] = "carol@example.com"
    msg["Subject"] = "Grüße \N{EN DASH} quarterly report ☕"
    msg["Date"] = format_datetime(datetime(2024, 3, 1, 9, 30, tzinfo=UTC))
    msg["Message-ID"] = "<report.1@example.com>"
    msg.set_content("Plain body: café\n")
    msg.add_alternative("<p>HTML body: <b>café</b></p>\n", subtype="html")
    msg.add_attachment(
        b"%PDF-1.4 fake", maintype="application", subtype="pdf", filename="Résumé 2024.pdf"
    )
    return msg


# --- Basics -----------------------------------------------------------------------


def test_plain_message_fields() -> None:
    parsed = parse_message(gmail_full(simple_message(), snippet="It&#39;s &amp; more"))

    assert isinstance(parsed, ParsedMessage)
    assert parsed.gmail_id == "msg-1"
    assert parsed.thread_id == "thr-1"
    assert parsed.label_ids == ("INBOX", "UNREAD")
    assert parsed.internal_date == datetime(2023, 11, 14, 22, 13, 20, 123000, tzinfo=UTC)
    assert parsed.history_id == "4242"
    assert parsed.size_estimate == 1234
    assert parsed.subject == "Hello"
    assert parsed.sender == "Alice <alice@example.com>"
    assert parsed.sender_address == "alice@example.com"
    assert parsed.to == "Bob <bob@example.com>, carol@example.com"
    assert parsed.cc == ""
    assert parsed.message_id_header == "<abc.123@example.com>"
    assert parsed.date_header == datetime(2023, 11, 14, 22, 13, 20, tzinfo=UTC)
    assert parsed.body_text == "Hi there.\n"
    assert parsed.body_html == ""
    assert parsed.attachments == []
    assert parsed.parse_error == ""
    # Gmail HTML-escapes snippets; we store the text.
    assert parsed.snippet == "It's & more"


@pytest.mark.parametrize(
    ("sender", "address"),
    [
        ("Ann <Ann.Lee@Example.COM>", "ann.lee@example.com"),
        ("ann@example.com", "ann@example.com"),
        ('"Lee, Ann" <ann@example.com>', "ann@example.com"),
        ("Mailer Daemon", ""),  # no address at all
        ("", ""),
        ("x <" + "a" * 400 + "@example.com>", ""),  # longer than any address may be
    ],
)
def test_the_sender_address_is_the_bare_lower_cased_address(sender: str, address: str) -> None:
    assert address_of(sender) == address


@pytest.mark.parametrize(
    ("snippet", "expected"),
    [
        ("It&#39;s &quot;here&quot; &lt;b&gt; &amp; &#x263A;", 'It\'s "here" <b> & \u263a'),
        (
            "R&D at https://x.example/?a=1&para=2&copy=3",
            "R&D at https://x.example/?a=1&para=2&copy=3",
        ),
        ("&bogusentity; & ;", "&bogusentity; & ;"),
    ],
)
def test_snippet_entities_are_unescaped(snippet: str, expected: str) -> None:
    assert parse_message(gmail_full(simple_message(), snippet=snippet)).snippet == expected


def test_parsed_message_is_frozen() -> None:
    parsed = parse_message(gmail_full(simple_message()))
    with pytest.raises(AttributeError):
        parsed.subject = "changed"  # type: ignore[misc]


def test_multipart_alternative_has_both_bodies() -> None:
    raw = (
        "From: a@example.com\nSubject: alt\nMIME-Version: 1.0\n"
        'Content-Type: multipart/alternative; boundary="B"\n\n'
        "--B\nContent-Type: text/plain; charset=utf-8\n\nplain version\n"
        "--B\nContent-Type: text/html; charset=utf-8\n\n<p>html version</p>\n"
        "--B--\n"
    )
    parsed = parse_message(gmail_full(raw))

    assert parsed.body_text == "plain version"
    assert parsed.body_html == "<p>html version</p>"
    assert parsed.attachments == []
    assert parsed.parse_error == ""


def test_html_only_message_leaves_text_body_empty() -> None:
    raw = "Subject: h\nContent-Type: text/html; charset=utf-8\n\n<p>only html</p>"
    parsed = parse_message(gmail_full(raw))
    assert parsed.body_text == ""
    assert parsed.body_html == "<p>only html</p>"


def test_first_text_part_wins() -> None:
    raw = (
        'Subject: list\nContent-Type: multipart/mixed; boundary="B"\n\n'
        "--B\nContent-Type: text/plain\n\nthe message\n"
        "--B\nContent-Type: text/plain\n\n-- mailing list footer\n"
        "--B--\n"
    )
    assert parse_message(gmail_full(raw)).body_text == "the message"


def test_nested_multipart_bodies_attachments_and_part_ids() -> None:
    msg = EmailMessage()
    msg["Subject"] = "nested"
    msg.set_content("nested plain\n")
    msg.add_alternative('<p>nested <img src="cid:logo"></p>\n', subtype="html")
    msg.get_payload()[1].add_related(
        b"\x89PNG fake", maintype="image", subtype="png", cid="<logo>", filename="logo.png"
    )
    msg.add_attachment(b"%PDF", maintype="application", subtype="pdf", filename="doc.pdf")
    # mixed[ alternative[ plain, related[ html, png ] ], pdf ]
    parsed = parse_message(gmail_full(msg.as_bytes()))

    assert parsed.body_text == "nested plain\n"
    assert parsed.body_html == '<p>nested <img src="cid:logo"></p>\n'
    assert parsed.attachments == [
        {
            "filename": "logo.png",
            "mime_type": "image/png",
            "size": 9,
            "attachment_id": "att-0.1.1",
            "part_id": "0.1.1",
        },
        {
            "filename": "doc.pdf",
            "mime_type": "application/pdf",
            "size": 4,
            "attachment_id": "att-1",
            "part_id": "1",
        },
    ]
    assert parsed.parse_error == ""


def test_forwarded_message_is_an_attachment_not_the_body() -> None:
    inner = EmailMessage()
    inner["Subject"] = "inner"
    inner.set_content("inner body\n")
    outer = EmailMessage()
    outer["Subject"] = "Fwd: inner"
    outer.set_content("outer body\n")
    outer.add_attachment(inner)

    for resource in (gmail_full(outer.as_bytes()), gmail_raw(outer.as_bytes())):
        parsed = parse_message(resource)
        assert parsed.body_text == "outer body\n"
        assert [a["mime_type"] for a in parsed.attachments] == ["message/rfc822"]
        assert parsed.attachments[0]["part_id"] == "1"
        assert parsed.attachments[0]["size"] > 0
        assert parsed.parse_error == ""


# --- Attachments --------------------------------------------------------------------


def test_attachment_metadata_never_includes_content() -> None:
    parsed = parse_message(gmail_full(rich_email().as_bytes()))

    assert parsed.attachments == [
        {
            "filename": "Résumé 2024.pdf",
            "mime_type": "application/pdf",
            "size": len(b"%PDF-1.4 fake"),
            "attachment_id": "att-1",
            "part_id": "1",
        }
    ]


@pytest.mark.parametrize(
    ("disposition", "expected"),
    [
        pytest.param(
            "attachment; filename*=utf-8''%E2%82%AC%20rates%20%C3%BCber.pdf",
            "€ rates über.pdf",
            id="rfc2231",
        ),
        pytest.param(
            "attachment; filename*0*=utf-8''Sehr%20langer%20; filename*1*=Dateiname%20%C3%BC.txt",
            "Sehr langer Dateiname ü.txt",
            id="rfc2231-continuation",
        ),
        pytest.param(
            "attachment; filename*=iso-8859-1'fr'r%E9sum%E9.txt",
            "résumé.txt",
            id="rfc2231-latin1",
        ),
        pytest.param(
            f'attachment; filename="{b_word("отчёт.xlsx", "utf-8")}"',
            "отчёт.xlsx",
            id="rfc2047-in-quotes",
        ),
        pytest.param('attachment; filename="plain name.txt"', "plain name.txt", id="ascii"),
    ],
)
def test_attachment_filename_decoding(disposition: str, expected: str) -> None:
    raw = (
        'Subject: f\nContent-Type: multipart/mixed; boundary="B"\n\n'
        "--B\nContent-Type: text/plain\n\nsee attached\n"
        f"--B\nContent-Type: application/octet-stream\nContent-Disposition: {disposition}\n"
        "Content-Transfer-Encoding: base64\n\naGVsbG8=\n"
        "--B--\n"
    )
    full = gmail_full(raw)
    # Gmail's own "filename" field is already decoded...
    assert parse_message(full).attachments[0]["filename"] == expected
    # ...but our own decoding of the header parameter must agree without it.
    full["payload"]["parts"][1]["filename"] = ""
    from_header = parse_message(full)
    assert from_header.attachments[0]["filename"] == expected
    assert from_header.attachments[0]["size"] == 5
    assert from_header.body_text == "see attached"
    assert from_header.parse_error == ""
    # And the raw format reads the same.
    from_raw = parse_message(gmail_raw(raw))
    assert from_raw.attachments == [
        {
            "filename": expected,
            "mime_type": "application/octet-stream",
            "size": 5,
            "attachment_id": "",
            "part_id": "1",
        }
    ]


def test_part_with_attachment_id_but_no_filename_is_an_attachment() -> None:
    resource = _resource(
        payload={
            "partId": "",
            "mimeType": "multipart/mixed",
            "headers": [{"name": "Subject", "value": "x"}],
            "parts": [
                {"partId": "0", "mimeType": "text/plain", "body": {"size": 2, "data": "aGk"}},
                {
                    "partId": "1",
                    "mimeType": "application/octet-stream",
                    "filename": "",
                    "body": {"size": 100, "attachmentId": "ANGjdJ-xyz"},
                },
            ],
        }
    )
    parsed = parse_message(resource)
    assert parsed.body_text == "hi"
    assert parsed.attachments == [
        {
            "filename": "",
            "mime_type": "application/octet-stream",
            "size": 100,
            "attachment_id": "ANGjdJ-xyz",
            "part_id": "1",
        }
    ]
    assert parsed.parse_error == ""


def test_html_body_not_inlined_by_gmail_is_listed_and_reported() -> None:
    resource = _resource(
        payload={
            "partId": "",
            "mimeType": "text/html",
            "headers": [],
            "body": {"size": 30_000_000, "attachmentId": "big-html"},
        }
    )
    parsed = parse_message(resource)
    assert parsed.body_html == ""
    assert parsed.attachments[0]["attachment_id"] == "big-html"
    assert "not inlined" in parsed.parse_error


# --- Headers ------------------------------------------------------------------------

SUBJECTS = [
    ("Grüße aus Köln ☕", "utf-8", b_word),
    ("Grüße aus Köln ☕", "utf-8", q_word),
    ("Café crème brûlée", "iso-8859-1", q_word),
    ("Привет, мир", "koi8-r", b_word),
    ("こんにちは世界", "iso-2022-jp", b_word),
    ("你好世界", "gb2312", b_word),
    ("“smart quotes” \N{EN DASH} €", "windows-1252", q_word),
]


@pytest.mark.parametrize(
    ("text", "charset", "encoder"),
    SUBJECTS,
    ids=[f"{c}-{e.__name__[0].upper()}" for _, c, e in SUBJECTS],
)
def test_rfc2047_subjects(text: str, charset: str, encoder: Any) -> None:
    subject = "Re: " + encoder(text, charset)
    parsed = parse_message(gmail_full(simple_message(subject=subject)))
    assert parsed.subject == f"Re: {text}"
    assert parsed.parse_error == ""
    assert parse_message(gmail_raw(simple_message(subject=subject))).subject == f"Re: {text}"


def test_encoded_sender_and_recipients_keep_the_header_text() -> None:
    parsed = parse_message(gmail_full(rich_email().as_bytes()))
    assert parsed.sender == "Jörg Müller <jorg@example.com>"
    assert parsed.to == "Bob <bob@example.com>, Zoë <zoe@example.com>"
    assert parsed.cc == "carol@example.com"
    assert parsed.subject == "Grüße \N{EN DASH} quarterly report ☕"


def test_folded_headers_are_unfolded() -> None:
    raw = (
        "Subject: a subject that was\n folded twice\n\tover three lines\n"
        f"To: Bob <bob@example.com>,\n {b_word('Zoë', 'utf-8')}\n <zoe@example.com>\n"
        f"From: {b_word('Grüße aus ', 'utf-8')}\n {b_word('Köln', 'utf-8')} <k@example.com>\n"
        "\nbody"
    )
    for resource in (gmail_full(raw), gmail_raw(raw)):
        parsed = parse_message(resource)
        assert parsed.subject == "a subject that was folded twice\tover three lines"
        assert parsed.to == "Bob <bob@example.com>, Zoë <zoe@example.com>"
        # Whitespace between adjacent encoded words (including the fold) is dropped.
        assert parsed.sender == "Grüße aus Köln <k@example.com>"


def test_header_lookup_is_case_insensitive_and_first_wins() -> None:
    resource = _resource(
        payload={
            "mimeType": "text/plain",
            "headers": [
                {"name": "SUBJECT", "value": "first"},
                {"name": "subject", "value": "second"},
                {"name": "from", "value": "a@example.com"},
                {"name": "Message-Id", "value": "<id@x>"},
            ],
            "body": {"size": 0},
        }
    )
    parsed = parse_message(resource)
    assert parsed.subject == "first"
    assert parsed.sender == "a@example.com"
    assert parsed.message_id_header == "<id@x>"


def test_unknown_charset_in_header_falls_back_and_is_reported() -> None:
    subject = "=?x-bogus-charset?Q?Hello_World?="
    parsed = parse_message(gmail_full(simple_message(subject=subject)))
    assert parsed.subject == "Hello World"
    assert "unknown charset 'x-bogus-charset'" in parsed.parse_error


def test_undecodable_bytes_in_declared_charset_are_replaced_and_reported() -> None:
    parsed = parse_message(gmail_full(simple_message(subject="=?utf-8?B?/w==?=ok")))
    assert parsed.subject == "\ufffdok"
    assert "invalid utf-8 bytes replaced" in parsed.parse_error


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("plain ascii", "plain ascii"),
        ("", ""),
        ("  padded  ", "padded"),
        ("already decoded: Grüße", "already decoded: Grüße"),
        # A literal backslash-u must not be taken as an escape (stdlib pitfall).
        (r"C:\users\x =?utf-8?q?caf=C3=A9?=", r"C:\users\x café"),
        # A multi-byte character split across two encoded words.
        ("=?utf-8?B?4pg=?= =?utf-8?B?lQ==?=", "☕"),
        # Space between an encoded word and plain text is kept.
        ("=?utf-8?Q?caf=C3=A9?= au lait", "café au lait"),
        # Encoded words without separating whitespace (seen in the wild).
        ("=?utf-8?Q?a?==?utf-8?Q?b?=", "ab"),
        # Words in different charsets.
        (f"{q_word('é', 'iso-8859-1')} {b_word('я', 'koi8-r')}", "éя"),
        ("=?UTF-8*en?Q?lang_tag?=", "lang tag"),
        ("=?utf-8?B?SGVsbG8?=", "Hello"),  # missing base64 padding
        ("=?utf-8?Q?unterminated", "=?utf-8?Q?unterminated"),
        ("=?utf-8?X?bad_encoding?=", "=?utf-8?X?bad_encoding?="),
        ("line\r\n folded", "line folded"),
        ("nul\x00byte", "nulbyte"),
    ],
)
def test_decode_header_value(value: str, expected: str) -> None:
    assert decode_header_value(value) == expected


def test_decode_header_value_never_raises_on_junk() -> None:
    for junk in ["=?", "=??=", "=?utf-8?B?%%%?=", "=?rot13?Q?abc?=", "=?base64?B?YQ==?=",
                 "=?unicode_escape?Q?=5Cx41?=", "=?\udc80?Q?x?=", "=?utf-8?Q?\udc80?="]:  # fmt: skip
        assert isinstance(decode_header_value(junk), str)
    # Python-only codecs are not charsets: no escape interpretation.
    assert decode_header_value("=?unicode_escape?Q?=5Cx41?=") == "\\x41"


def test_8bit_headers_in_raw_messages() -> None:
    utf8 = "Subject: Grüße\nFrom: a@example.com\n\nbody".encode()
    parsed = parse_message(gmail_raw(utf8))
    assert parsed.subject == "Grüße"
    assert parsed.parse_error == ""

    latin1 = "Subject: Grüße\n\nbody".encode("latin-1")
    parsed = parse_message(gmail_raw(latin1))
    assert parsed.subject == "Grüße"
    assert "not UTF-8" in parsed.parse_error


def test_headers_without_value_and_malformed_entries() -> None:
    resource = _resource(
        payload={
            "mimeType": "text/plain",
            "headers": [
                {"name": "Subject"},
                {"name": "From", "value": None},
                "not a header",
                {"value": "no name"},
                {"name": "To", "value": "bob@example.com"},
            ],
            "body": {"size": 2, "data": "aGk="},
        }
    )
    parsed = parse_message(resource)
    assert parsed.subject == ""
    assert parsed.sender == ""
    assert parsed.to == "bob@example.com"
    assert parsed.body_text == "hi"
    assert "malformed header entry" in parsed.parse_error


def test_huge_headers_are_truncated() -> None:
    huge = "x" * 100_000
    resource = _resource(
        payload={
            "mimeType": "text/plain",
            "headers": [
                {"name": "Subject", "value": huge},
                {"name": "From", "value": huge},
                {"name": "To", "value": ", ".join(f"u{i}@example.com" for i in range(10_000))},
                {"name": "Cc", "value": huge},
                {"name": "Message-ID", "value": f"<{huge}@example.com>"},
            ],
        }
    )
    parsed = parse_message(resource)
    assert len(parsed.subject) == MAX_HEADER_CHARS
    assert len(parsed.sender) == MAX_HEADER_CHARS
    assert len(parsed.to) == MAX_HEADER_CHARS
    assert len(parsed.cc) == MAX_HEADER_CHARS
    assert len(parsed.message_id_header) == MAX_MESSAGE_ID_CHARS
    assert "Subject truncated from 100000 to 10000 characters" in parsed.parse_error
    assert "From truncated" in parsed.parse_error
    assert "Message-ID truncated" in parsed.parse_error
    # Long recipient lists are legitimate: truncated without a parse error.
    assert "To truncated" not in parsed.parse_error
    assert "Cc truncated" not in parsed.parse_error


def test_huge_encoded_header_is_decoded_and_truncated_quickly() -> None:
    encoded = " ".join([b_word("Grüße ", "utf-8")] * 20_000)  # ~600 KB
    hostile = "=?a?q?" * 50_000  # encoded-word starts that never end
    resource = _resource(
        payload={
            "mimeType": "text/plain",
            "headers": [
                {"name": "Subject", "value": encoded},
                {"name": "From", "value": hostile},
            ],
        }
    )
    started = time.perf_counter()
    parsed = parse_message(resource)
    assert time.perf_counter() - started < 5
    assert parsed.subject.startswith("Grüße Grüße")
    assert len(parsed.subject) == MAX_HEADER_CHARS
    assert parsed.sender == hostile[:MAX_HEADER_CHARS]


def test_nul_characters_are_removed_everywhere() -> None:
    resource = _resource(
        id="msg\x00-1",
        snippet="snip\x00pet",
        labelIds=["INBOX\x00"],
        payload={
            "partId": "",
            "mimeType": "multipart/mixed",
            "headers": [
                {"name": "Subject", "value": "sub\x00ject " + b_word("a\x00b", "utf-8")},
                {"name": "From", "value": "a\x00@example.com"},
                {"name": "To", "value": "b\x00@example.com"},
                {"name": "Cc", "value": "c\x00@example.com"},
                {"name": "Message-ID", "value": "<id\x00@x>"},
            ],
            "parts": [
                {
                    "partId": "0",
                    "mimeType": "text/plain",
                    "headers": [{"name": "Content-Type", "value": "text/plain; charset=utf-8"}],
                    "body": {"data": _b64url(b"te\x00xt\x00")},
                },
                {
                    "partId": "1",
                    "mimeType": "text/html",
                    "body": {"data": _b64url(b"<p>ht\x00ml</p>")},
                },
                {
                    "partId": "2",
                    "mimeType": "application/pdf",
                    "filename": "fi\x00le.pdf",
                    "body": {"size": 3, "attachmentId": "a\x00tt"},
                },
            ],
        },
    )
    parsed = parse_message(resource)
    assert parsed.gmail_id == "msg-1"
    assert parsed.snippet == "snippet"
    assert parsed.label_ids == ("INBOX",)
    assert parsed.subject == "subject ab"
    assert parsed.sender == "a@example.com"
    assert parsed.to == "b@example.com"
    assert parsed.cc == "c@example.com"
    assert parsed.message_id_header == "<id@x>"
    assert parsed.body_text == "text"
    assert parsed.body_html == "<p>html</p>"
    assert parsed.attachments[0]["filename"] == "file.pdf"
    assert parsed.attachments[0]["attachment_id"] == "att"
    for value in vars(parsed).values():
        assert "\x00" not in repr(value)


def test_nul_bytes_in_raw_message_are_removed() -> None:
    raw = b"Subject: a\x00b\nContent-Type: text/plain\n\nbo\x00dy"
    parsed = parse_message(gmail_raw(raw))
    assert parsed.subject == "ab"
    assert parsed.body_text == "body"


def test_lone_surrogates_are_replaced() -> None:
    resource = _resource(payload={"headers": [{"name": "Subject", "value": "bad \ud800 char"}]})
    assert parse_message(resource).subject == "bad \ufffd char"


# --- Dates --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("Tue, 14 Nov 2023 23:13:20 +0100", datetime(2023, 11, 14, 22, 13, 20, tzinfo=UTC)),
        ("14 Nov 2023 22:13:20 -0000", datetime(2023, 11, 14, 22, 13, 20, tzinfo=UTC)),
        ("Tue, 14 Nov 2023 17:13:20 EST", datetime(2023, 11, 14, 22, 13, 20, tzinfo=UTC)),
        ("Tue, 14 Nov 23 22:13:20 GMT", datetime(2023, 11, 14, 22, 13, 20, tzinfo=UTC)),
        ("Tue, 14 Nov 2023\n 22:13:20 +0000", datetime(2023, 11, 14, 22, 13, 20, tzinfo=UTC)),
    ],
)
def test_date_header_is_parsed_to_aware_utc(value: str, expected: datetime) -> None:
    raw = f"Subject: d\nDate: {value}\n\nbody"
    parsed = parse_message(gmail_full(raw))
    assert parsed.date_header == expected
    assert parsed.date_header is not None
    assert parsed.date_header.utcoffset() is not None
    assert parsed.parse_error == ""


@pytest.mark.parametrize(
    "value", ["not a date", "Tue, 32 Foo 2023 99:99:99 +0100", "Mon, 1 Jan 99999 00:00:00 +0000"]
)
def test_unparseable_date_header(value: str) -> None:
    parsed = parse_message(gmail_full(f"Subject: d\nDate: {value}\n\nbody"))
    assert parsed.date_header is None
    assert "unparseable Date header" in parsed.parse_error


def test_missing_date_header_is_not_an_error() -> None:
    parsed = parse_message(gmail_full("Subject: d\n\nbody"))
    assert parsed.date_header is None
    assert parsed.parse_error == ""


def test_internal_date_accepts_integer() -> None:
    parsed = parse_message(gmail_full(simple_message(), internalDate=1700000000123))
    assert parsed.internal_date == datetime(2023, 11, 14, 22, 13, 20, 123000, tzinfo=UTC)


@pytest.mark.parametrize("internal_date", [None, "", "garbage", "1e12", "9" * 30, True, [1]])
def test_missing_internal_date_falls_back_to_date_header(internal_date: Any) -> None:
    resource = gmail_full(simple_message(), internalDate=internal_date)
    if internal_date is None:
        del resource["internalDate"]
    parsed = parse_message(resource)
    assert parsed.internal_date == datetime(2023, 11, 14, 22, 13, 20, tzinfo=UTC)
    assert "internalDate missing or invalid, used the Date header" in parsed.parse_error


def test_missing_internal_date_and_date_header_falls_back_to_epoch() -> None:
    resource = gmail_full("Subject: no dates\nDate: nonsense\n\nbody", internalDate="garbage")
    parsed = parse_message(resource)
    assert parsed.internal_date == datetime(1970, 1, 1, tzinfo=UTC)
    assert "used the epoch" in parsed.parse_error
    assert "unparseable Date header" in parsed.parse_error


# --- Body decoding (format=full) ----------------------------------------------------


def _single_part(data: str, content_type: str = "text/plain; charset=utf-8") -> dict[str, Any]:
    return _resource(
        payload={
            "partId": "",
            "mimeType": content_type.split(";")[0],
            "filename": "",
            "headers": [{"name": "Content-Type", "value": content_type}],
            "body": {"size": len(str(data)), "data": data},
        }
    )


def test_body_data_with_and_without_padding_and_either_alphabet() -> None:
    text = "ü?>>~~ end"  # encodes to characters that differ between the alphabets
    encoded = text.encode("utf-8")
    for data in (
        _b64url(encoded),
        _b64url(encoded, padding=False),
        base64.b64encode(encoded).decode(),
    ):
        parsed = parse_message(_single_part(data))
        assert parsed.body_text == text
        assert parsed.parse_error == ""


@pytest.mark.parametrize(
    ("charset", "data", "expected"),
    [
        ("iso-8859-1", "Café".encode("latin-1"), "Café"),
        # Windows "smart quotes" in mail labelled ISO-8859-1 are read as Windows-1252.
        ("iso-8859-1", b"\x93quoted\x94", "“quoted”"),
        ("koi8-r", "Привет".encode("koi8-r"), "Привет"),
        ("iso-2022-jp", "こんにちは".encode("iso-2022-jp"), "こんにちは"),
        ("gb2312", "你好".encode("gb2312"), "你好"),
        ("windows-1252", "€uro".encode("cp1252"), "€uro"),
        ('"UTF-8"', "quoted charset ✓".encode(), "quoted charset ✓"),
    ],
)
def test_body_charsets(charset: str, data: bytes, expected: str) -> None:
    parsed = parse_message(_single_part(_b64url(data), f"text/plain; charset={charset}"))
    assert parsed.body_text == expected
    assert parsed.parse_error == ""


def test_body_without_charset_guesses_utf8_then_windows_1252() -> None:
    assert parse_message(_single_part(_b64url("naïve".encode()), "text/plain")).body_text == (
        "naïve"
    )
    parsed = parse_message(_single_part(_b64url("naïve".encode("cp1252")), "text/plain"))
    assert parsed.body_text == "naïve"
    assert parsed.parse_error == ""


def test_body_with_unknown_charset_is_decoded_and_reported() -> None:
    parsed = parse_message(
        _single_part(_b64url(b"Hello bogus"), "text/plain; charset=x-no-such-charset")
    )
    assert parsed.body_text == "Hello bogus"
    assert "unknown charset 'x-no-such-charset'" in parsed.parse_error


def test_body_with_invalid_bytes_for_its_charset_is_reported() -> None:
    parsed = parse_message(_single_part(_b64url(b"ok \xff\xfe bad"), "text/plain; charset=utf-8"))
    assert parsed.body_text == "ok \ufffd\ufffd bad"
    assert "invalid utf-8 bytes replaced" in parsed.parse_error


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        ("!!!not base64***", "part root: malformed base64 body data"),
        ("aGVsbG8gd29ybGQ$$", "part root: malformed base64 body data"),
        ("a", "part root: malformed base64 body data"),
        (12345, "part root: body data is not a string"),
    ],
)
def test_malformed_base64_body(data: Any, reason: str) -> None:
    parsed = parse_message(_single_part(data))
    assert isinstance(parsed.body_text, str)
    assert reason in parsed.parse_error


def test_malformed_base64_body_keeps_the_readable_part() -> None:
    parsed = parse_message(_single_part(_b64url(b"hello world") + "%%"))
    assert parsed.body_text == "hello world"
    assert "malformed base64" in parsed.parse_error


# --- Missing and malformed structure ------------------------------------------------


def test_minimal_format_has_no_payload_and_no_error() -> None:
    parsed = parse_message(
        {"id": "m", "threadId": "t", "labelIds": ["INBOX"], "historyId": "1", "sizeEstimate": 9}
    )
    assert parsed.subject == parsed.body_text == parsed.body_html == ""
    assert parsed.attachments == []
    assert parsed.date_header is None
    # No internalDate either: the one thing that is reported.
    assert parsed.internal_date == datetime(1970, 1, 1, tzinfo=UTC)
    assert parsed.parse_error.startswith("internalDate missing")


def test_metadata_format_has_headers_without_bodies() -> None:
    resource = _resource(
        payload={
            "mimeType": "multipart/alternative",
            "headers": [
                {"name": "Subject", "value": q_word("Grüße", "utf-8")},
                {"name": "From", "value": "a@example.com"},
                {"name": "Date", "value": "Tue, 14 Nov 2023 23:13:20 +0100"},
            ],
        }
    )
    parsed = parse_message(resource)
    assert parsed.subject == "Grüße"
    assert parsed.sender == "a@example.com"
    assert parsed.date_header == datetime(2023, 11, 14, 22, 13, 20, tzinfo=UTC)
    assert parsed.body_text == parsed.body_html == ""
    assert parsed.parse_error == ""


def test_metadata_format_with_an_unknown_body_charset_is_not_an_error() -> None:
    resource = _resource(
        payload={
            "partId": "",
            "mimeType": "text/plain",
            "filename": "",
            "headers": [
                {"name": "Subject", "value": "s"},
                {"name": "Content-Type", "value": "text/plain; charset=x-unknown"},
            ],
            "body": {"size": 0},
        }
    )
    assert parse_message(resource).parse_error == ""


def test_full_multipart_without_parts_keeps_its_text() -> None:
    """A boundary that never occurs leaves a multipart with body data and no parts."""
    raw = (
        'Subject: broken\nContent-Type: multipart/mixed; boundary="DECLARED"\n\n'
        "--OTHER\nContent-Type: text/plain\n\nthe text\n--OTHER--\n"
    )
    parsed = parse_message(gmail_full(raw))
    assert "the text" in parsed.body_text
    assert "without its boundary" in parsed.parse_error


@pytest.mark.parametrize("payload", ["a string", ["a", "list"], 42])
def test_payload_that_is_not_an_object(payload: Any) -> None:
    parsed = parse_message(_resource(payload=payload))
    assert parsed.body_text == ""
    assert "payload is not an object" in parsed.parse_error


def test_non_dict_parts_and_bodies_are_skipped() -> None:
    resource = _resource(
        payload={
            "partId": "",
            "mimeType": "multipart/mixed",
            "headers": [{"name": "Subject", "value": "s"}],
            "parts": [
                "junk",
                None,
                {"partId": "2", "mimeType": "text/plain", "body": "not a dict"},
                {"partId": "3", "mimeType": "text/plain", "body": {"data": "b2s="}},
                {"partId": "4", "mimeType": "multipart/mixed", "parts": "not a list"},
            ],
        }
    )
    parsed = parse_message(resource)
    assert parsed.subject == "s"
    assert parsed.body_text == ""  # part 2 was the first text/plain; its body is unusable
    assert "part 0: not an object" in parsed.parse_error
    assert "part 2: body is not an object" in parsed.parse_error
    assert "part 4: parts is not a list" in parsed.parse_error


def test_part_without_mime_type_uses_its_content_type_header() -> None:
    resource = _resource(
        payload={
            "headers": [{"name": "Content-Type", "value": "text/html; charset=utf-8"}],
            "body": {"data": _b64url(b"<b>x</b>")},
        }
    )
    assert parse_message(resource).body_html == "<b>x</b>"


def test_deeply_nested_parts_do_not_recurse_forever() -> None:
    leaf: dict[str, Any] = {"mimeType": "text/plain", "body": {"data": "aGk="}}
    node = leaf
    for _ in range(2_000):
        node = {"mimeType": "multipart/mixed", "parts": [node]}
    parsed = parse_message(_resource(payload=node))
    assert parsed.body_text == ""
    assert "MIME tree deeper than" in parsed.parse_error


def test_too_many_parts_are_cut_off() -> None:
    parts = [{"mimeType": "application/pdf", "filename": f"{i}.pdf"} for i in range(5_000)]
    parsed = parse_message(_resource(payload={"mimeType": "multipart/mixed", "parts": parts}))
    assert 0 < len(parsed.attachments) < 5_000
    assert "larger than" in parsed.parse_error
    assert len(parsed.parse_error) <= 2_000


@pytest.mark.parametrize("message", [None, "id", ["id"], {}, {"id": ""}, {"id": None}, {"id": 5}])
def test_resource_without_id_raises_a_clear_error(message: Any) -> None:
    with pytest.raises(MessageParseError):
        parse_message(message)


def test_odd_scalar_fields() -> None:
    resource = gmail_full(
        simple_message(),
        labelIds="INBOX",
        sizeEstimate=-5,
        threadId=None,
        historyId=123,
        snippet=None,
    )
    parsed = parse_message(resource)
    assert parsed.label_ids == ()
    assert "labelIds is not a list" in parsed.parse_error
    assert parsed.size_estimate is None
    assert parsed.thread_id == ""
    assert parsed.history_id == "123"
    assert parsed.snippet == ""


@pytest.mark.parametrize(
    ("value", "expected"),
    [(5, 5), ("77", 77), ("²", None), ("9" * 5000, None), (2**40, None), (1.5, None)],
)
def test_size_estimate(value: Any, expected: int | None) -> None:
    assert parse_message(gmail_full(simple_message(), sizeEstimate=value)).size_estimate == (
        expected
    )


def test_too_long_ids_for_their_columns_are_dropped() -> None:
    parsed = parse_message(gmail_full(simple_message(), threadId="t" * 65, historyId="9" * 33))
    assert parsed.thread_id == ""
    assert parsed.history_id == ""
    assert "threadId too long" in parsed.parse_error
    assert "historyId too long" in parsed.parse_error


def test_random_damage_never_raises() -> None:
    """Replace random nodes of realistic resources with junk: parsing must survive."""
    rng = random.Random(20240301)
    junk: list[Any] = [None, "", "x", 0, -1, 10**30, True, [], {}, ["x"], {"a": 1}, 1.5, "=?"]
    templates = [
        gmail_full(rich_email().as_bytes()),
        gmail_full(simple_message(subject=b_word("Привет", "koi8-r"))),
    ]

    def containers(node: Any) -> list[Any]:
        found = []
        if isinstance(node, dict | list):
            found.append(node)
            for child in node.values() if isinstance(node, dict) else node:
                found.extend(containers(child))
        return found

    for _ in range(400):
        resource = copy.deepcopy(rng.choice(templates))
        for _ in range(rng.randint(1, 6)):
            target = rng.choice(containers(resource))
            if isinstance(target, dict) and target:
                key = rng.choice(list(target))
                if target is not resource or key != "id":
                    target[key] = copy.deepcopy(rng.choice(junk))
            elif isinstance(target, list) and target:
                target[rng.randrange(len(target))] = copy.deepcopy(rng.choice(junk))
        parsed = parse_message(resource)
        assert isinstance(parsed.parse_error, str)


# --- format=raw ---------------------------------------------------------------------


def test_raw_round_trip_matches_full_format() -> None:
    raw_bytes = rich_email().as_bytes()
    from_raw = parse_message(gmail_raw(raw_bytes))
    from_full = parse_message(gmail_full(raw_bytes))

    assert from_raw.subject == "Grüße \N{EN DASH} quarterly report ☕"
    assert from_raw.sender == "Jörg Müller <jorg@example.com>"
    assert from_raw.body_text == "Plain body: café\n"
    assert from_raw.body_html == "<p>HTML body: <b>café</b></p>\n"
    assert from_raw.date_header == datetime(2024, 3, 1, 9, 30, tzinfo=UTC)
    assert from_raw.parse_error == ""
    for name in (
        "gmail_id", "thread_id", "label_ids", "internal_date", "history_id", "snippet",
        "size_estimate", "subject", "sender", "to", "cc", "date_header",
        "message_id_header", "body_text", "body_html", "parse_error",
    ):  # fmt: skip
        assert getattr(from_raw, name) == getattr(from_full, name), name
    # Only the full format carries attachment ids.
    assert from_raw.attachments == [
        {**attachment, "attachment_id": ""} for attachment in from_full.attachments
    ]


def test_raw_without_padding() -> None:
    resource = gmail_raw(simple_message())
    resource["raw"] = resource["raw"].rstrip("=")
    parsed = parse_message(resource)
    assert parsed.body_text == "Hi there.\n"
    assert parsed.parse_error == ""


def test_raw_transfer_encodings() -> None:
    raw = (
        'Subject: cte\nMIME-Version: 1.0\nContent-Type: multipart/mixed; boundary="B"\n\n'
        "--B\nContent-Type: text/plain; charset=iso-8859-1\n"
        "Content-Transfer-Encoding: quoted-printable\n\n"
        "Caf=E9 cr=E8me, a soft=\n line break =3D done\n"
        "--B\nContent-Type: text/html; charset=utf-8\nContent-Transfer-Encoding: base64\n\n"
        + base64.encodebytes("<p>Grüße ☕ from base64</p>".encode()).decode()
        + "--B--\n"
    )
    parsed = parse_message(gmail_raw(raw))
    assert parsed.body_text == "Café crème, a soft line break = done"
    assert parsed.body_html == "<p>Grüße ☕ from base64</p>"
    assert parsed.parse_error == ""


@pytest.mark.parametrize("cte", ["7bit", "8bit", "binary", ""])
def test_raw_identity_transfer_encodings(cte: str) -> None:
    header = f"Content-Transfer-Encoding: {cte}\n" if cte else ""
    raw = f"Subject: x\nContent-Type: text/plain; charset=utf-8\n{header}\nŽluťoučký kůň\n"
    parsed = parse_message(gmail_raw(raw.encode()))
    assert parsed.body_text == "Žluťoučký kůň\n"
    assert parsed.parse_error == ""


def test_raw_malformed_base64_part() -> None:
    raw = (
        "Subject: x\nContent-Type: text/plain; charset=utf-8\n"
        "Content-Transfer-Encoding: base64\n\naGVsbG8gd29ybGQ$\n"
    )
    parsed = parse_message(gmail_raw(raw))
    assert parsed.body_text.startswith("hello world")
    assert "MIME defects" in parsed.parse_error


def test_raw_missing_close_boundary_still_reads_parts() -> None:
    raw = (
        'Subject: x\nContent-Type: multipart/alternative; boundary="B"\n\n'
        "--B\nContent-Type: text/plain\n\nplain\n"
        "--B\nContent-Type: text/html\n\n<p>html</p>\n"
    )
    parsed = parse_message(gmail_raw(raw))
    assert parsed.body_text == "plain"
    assert parsed.body_html.startswith("<p>html</p>")
    assert "CloseBoundaryNotFoundDefect" in parsed.parse_error


def test_raw_with_boundary_never_found_keeps_the_text() -> None:
    raw = (
        'Subject: broken\nContent-Type: multipart/mixed; boundary="DECLARED"\n\n'
        "--OTHER\nContent-Type: text/plain\n\nthe text\n--OTHER--\n"
    )
    parsed = parse_message(gmail_raw(raw))
    assert parsed.subject == "broken"
    assert "the text" in parsed.body_text
    assert "StartBoundaryNotFoundDefect" in parsed.parse_error
    assert "without its boundary" in parsed.parse_error


@pytest.mark.parametrize("raw", ["%%%%", "", "a", 42, None])
def test_raw_garbage_never_raises(raw: Any) -> None:
    parsed = parse_message(_resource(raw=raw))
    assert parsed.body_text == ""
    assert parsed.gmail_id == "msg-1"


def test_raw_message_without_headers_or_body_separator() -> None:
    parsed = parse_message(gmail_raw(b"just some text without any header\n"))
    assert isinstance(parsed.body_text, str)


# A container's boundary makes its Content-Type unique: such values are answered
# without the email package, and must read exactly as it reads them.
BOUNDARY_ONLY = [
    'multipart/alternative; boundary="000000000000a1b2c3d4e5f6"',
    'multipart/mixed; boundary="----=_Part_0_123456.789"',
    "multipart/mixed; boundary=0000abcd_x.y",
    'Multipart/Related;\r\n boundary="=_b0 (x)+_,./:=?-"',
    '  multipart/report ;BOUNDARY="a"  ',
]
OTHER_CONTAINERS = [
    'multipart/alternative; boundary="a"; charset="utf-8"',
    'multipart/mixed; boundary="a"; name="x.txt"',
    'multipart/mixed; boundary="a\\"b"',
    "multipart/mixed; boundary=",
    "multipart/mixed/x; boundary=a",
    "multipart/mixed; boundary=----=_Part_0_123456.789",
]


@pytest.mark.parametrize("content_type", BOUNDARY_ONLY + OTHER_CONTAINERS)
def test_a_container_type_reads_as_the_email_package_reads_it(content_type: str) -> None:
    from mailsync import parsing

    headers = parsing._Headers([("Content-Type", content_type)])
    expected = parsing._mime_params(headers.as_message(), "root", [])

    assert parsing._header_mime_params(headers, "root", []) == expected
    taken = parsing._MULTIPART_WITH_BOUNDARY.fullmatch(content_type) is not None
    assert taken == (content_type in BOUNDARY_ONLY)
