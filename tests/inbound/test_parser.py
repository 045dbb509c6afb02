"""Focused parser tests on small hand-written reports, plus fuzzing and a huge message."""

from __future__ import annotations

import random
import time
from textwrap import dedent

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mailbeacon.events import reason_patterns as patterns
from mailbeacon.events.reasons import Category, Reason, canonical_status, classify
from mailbeacon.inbound.message import MAX_INPUT_BYTES
from mailbeacon.inbound.parser import Kind, Result, parse
from tests.inbound.test_corpus import corpus_dir


def mail(text: str) -> bytes:
    """A hand-written message: dedented, CRLF-free, as bytes."""
    return dedent(text).lstrip("\n").encode()


DSN_TWO_RECIPIENTS = mail("""
    Return-Path: <>
    From: Mail Delivery System <MAILER-DAEMON@mx.example.net>
    To: bounce@mb.example.com
    Subject: Undelivered Mail Returned to Sender
    MIME-Version: 1.0
    Content-Type: multipart/report; report-type=delivery-status; boundary="B"

    --B
    Content-Type: text/plain

    This is the mail system at host mx.example.net.

    <ann@example.org>: host mx.example.org said: 550 5.1.1 <ann@example.org>: Recipient
        address rejected: User unknown (in reply to RCPT TO command)

    <bob@example.org>: host mx.example.org said: 452 4.2.2 Mailbox full (in reply to RCPT
        TO command)

    --B
    Content-Type: message/delivery-status

    Reporting-MTA: dns; mx.example.net

    Final-Recipient: rfc822; Ann@Example.org
    Original-Recipient: rfc822;ann@example.org
    Action: failed
    Status: 5.1.1
    Remote-MTA: dns; mx.example.org
    Diagnostic-Code: smtp; 550 5.1.1 <ann@example.org>: Recipient address rejected:
        User unknown

    Final-Recipient: rfc822; bob@example.org
    Action: delayed
    Status: 4.2.2
    Remote-MTA: dns; mx.example.org
    Diagnostic-Code: smtp; 452 4.2.2 Mailbox full

    --B
    Content-Type: message/rfc822

    Message-ID: <m-1@mb.example.com>
    X-Mailbeacon-Delivery: 01hzzzzzzzzzzzzzzzzzzzzzzz
    From: news@mb.example.com
    To: ann@example.org, bob@example.org
    Subject: Hello

    Hi.
    --B--
""")


def test_rfc3464_dsn_with_two_recipients() -> None:
    ann, bob = parse(DSN_TWO_RECIPIENTS)
    assert ann.kind is Kind.BOUNCE
    assert (ann.recipient, ann.status, ann.reply_code, ann.action) == (
        "ann@example.org", "5.1.1", "550", "failed")
    assert (ann.reason, ann.category, ann.hard, ann.permanent) == (
        "userunknown", Category.HARD, True, True)
    assert ann.remote_mta == "mx.example.org"
    assert ann.diagnostic == "550 5.1.1 <ann@example.org>: Recipient address rejected: User unknown"
    assert (bob.recipient, bob.status, bob.action, bob.reason) == (
        "bob@example.org", "4.2.2", "delayed", "mailboxfull")
    assert (bob.category, bob.hard, bob.permanent) == (Category.SOFT, False, False)
    for result in (ann, bob):
        assert result.original_message_id == "m-1@mb.example.com"
        assert result.original_headers["x-mailbeacon-delivery"] == "01hzzzzzzzzzzzzzzzzzzzzzzz"
        assert result.original_headers["subject"] == "Hello"


MAILBOX_FULL = mail("""
    From: MAILER-DAEMON@mx.example.net
    Subject: Delivery Status Notification (Delay)
    Content-Type: multipart/report; report-type=delivery-status; boundary="B"

    --B
    Content-Type: message/delivery-status

    Reporting-MTA: dns; mx.example.net

    Final-Recipient: rfc822; carol@example.org
    Action: failed
    Status: 5.2.2
    Diagnostic-Code: smtp; 552 5.2.2 Mailbox full

    --B--
""")


def test_mailbox_full_is_soft_even_when_permanent() -> None:
    (result,) = parse(MAILBOX_FULL)
    assert (result.reason, result.status, result.category) == ("mailboxfull", "5.2.2",
                                                                Category.SOFT)
    assert result.permanent and not result.hard


def test_temporary_mailbox_full() -> None:
    (result,) = parse(MAILBOX_FULL.replace(b"5.2.2", b"4.2.2").replace(b"552", b"452"))
    assert (result.status, result.reply_code, result.reason) == ("4.2.2", "452", "mailboxfull")
    assert not result.permanent and result.category is Category.SOFT


POLICY_BLOCK = mail("""
    From: Mail Delivery Subsystem <mailer-daemon@mx.example.net>
    Subject: Returned mail: see transcript for details
    Content-Type: multipart/report; report-type=delivery-status; boundary="B"

    --B
    Content-Type: message/delivery-status

    Final-Recipient: rfc822; dave@example.org
    Action: failed
    Status: 5.7.1
    Diagnostic-Code: smtp; 550 5.7.1 Service unavailable; client [192.0.2.7] blocked
        using zen.spamhaus.org

    --B--
""")


def test_policy_block_is_recorded_not_suppressed() -> None:
    (result,) = parse(POLICY_BLOCK)
    assert (result.reason, result.category, result.status) == ("blocked", Category.POLICY,
                                                                "5.7.1")
    assert result.permanent and not result.hard


ARF_REDACTED = mail("""
    From: feedbackloop@fbl.example.net
    To: abuse@mb.example.com
    Subject: Abuse Report
    MIME-Version: 1.0
    Content-Type: multipart/report; report-type=feedback-report; boundary="B"

    --B
    Content-Type: text/plain

    This is an email abuse report.
    --B
    Content-Type: message/feedback-report

    Feedback-Type: abuse
    User-Agent: ExampleFBL/0.1
    Version: 0.1
    Original-Rcpt-To: redacted@example.org

    --B
    Content-Type: message/rfc822

    Message-ID: <m-2@mb.example.com>
    X-Mailbeacon-Delivery: 01habcdefghjkmnpqrstvwxyz0
    From: news@mb.example.com
    To: Erin <erin@example.org>
    Subject: Offer

    Buy.
    --B--
""")


def test_arf_complaint_recovers_the_redacted_recipient() -> None:
    (result,) = parse(ARF_REDACTED)
    assert result.kind is Kind.COMPLAINT
    assert (result.recipient, result.feedback_type, result.reporter) == (
        "erin@example.org", "abuse", "ExampleFBL/0.1")
    assert (result.reason, result.category, result.hard) == ("feedback", None, False)
    assert result.original_message_id == "m-2@mb.example.com"
    assert result.original_headers["x-mailbeacon-delivery"] == "01habcdefghjkmnpqrstvwxyz0"


def test_arf_without_multipart_or_report_type() -> None:
    raw = mail("""
        From: fbl@isp.example.net
        Subject: complaint
        Content-Type: text/plain

        Feedback-Type: fraud
        User-Agent: OldFBL
        Version: 0.1
        Removal-Recipient: Frank@Example.org
    """)
    (result,) = parse(raw)
    assert (result.kind, result.recipient, result.feedback_type) == (
        Kind.COMPLAINT, "frank@example.org", "fraud")


VACATION = mail("""
    From: Grace <grace@example.org>
    To: news@mb.example.com
    Subject: Out of Office: Hello
    Auto-Submitted: auto-replied
    In-Reply-To: <m-3@mb.example.com>
    Content-Type: text/plain

    I am away until Monday and will answer when I am back.
""")


def test_vacation_auto_reply_is_not_a_bounce() -> None:
    (result,) = parse(VACATION)
    assert result.kind is Kind.AUTO_REPLY
    assert (result.recipient, result.reason) == ("grace@example.org", "vacation")
    assert (result.category, result.hard, result.permanent) == (None, False, False)
    assert result.original_message_id == "m-3@mb.example.com"


def test_auto_reply_by_subject_only() -> None:
    raw = VACATION.replace(b"Auto-Submitted: auto-replied\n", b"").replace(
        b"Out of Office: Hello", b"Automatic reply: Hello")
    assert parse(raw)[0].kind is Kind.AUTO_REPLY


QMAIL = mail("""
    Return-Path: <>
    From: MAILER-DAEMON@mx.example.net
    To: bounce@mb.example.com
    Subject: failure notice

    Hi. This is the qmail-send program at mx.example.net.
    I'm afraid I wasn't able to deliver your message to the following addresses.
    This is a permanent error; I've given up. Sorry it didn't work out.

    <heidi@example.org>:
    192.0.2.3 does not like recipient.
    Remote host said: 550 5.1.1 <heidi@example.org>... No such user
    Giving up on 192.0.2.3.

    <ivan@example.org>:
    Sorry, I couldn't find any host named example.org. (#5.1.2)

    --- Below this line is a copy of the message.

    Return-Path: <bounce@mb.example.com>
    Message-ID: <m-4@mb.example.com>
    X-Mailbeacon-Delivery: 01hqqqqqqqqqqqqqqqqqqqqqqq
    From: news@mb.example.com
    To: heidi@example.org
    Subject: Hi

    Hi.
""")


def test_qmail_text_bounce() -> None:
    heidi, ivan = parse(QMAIL)
    assert (heidi.kind, heidi.recipient, heidi.status, heidi.reply_code) == (
        Kind.BOUNCE, "heidi@example.org", "5.1.1", "550")
    assert heidi.hard and heidi.reason == "userunknown"
    assert (ivan.recipient, ivan.status, ivan.reason, ivan.hard) == (
        "ivan@example.org", "5.1.2", "hostunknown", True)
    assert heidi.original_message_id == "m-4@mb.example.com"
    assert heidi.original_headers["x-mailbeacon-delivery"] == "01hqqqqqqqqqqqqqqqqqqqqqqq"


def test_original_headers_from_a_text_rfc822_headers_part() -> None:
    raw = mail("""
        From: postmaster@mx.example.net
        Subject: Delivery Status Notification (Failure)
        Content-Type: multipart/report; report-type=delivery-status; boundary="B"

        --B
        Content-Type: message/delivery-status

        Final-Recipient: rfc822; judy@example.org
        Action: failed
        Status: 5.1.1

        --B
        Content-Type: text/rfc822-headers

        Message-ID: <m-5@mb.example.com>
        X-Mailbeacon-Delivery: 01hrrrrrrrrrrrrrrrrrrrrrrr
        X-Mailgun-Variables: {"campaign": "spring"}
        From: news@mb.example.com
        To: judy@example.org
        --B--
    """)
    (result,) = parse(raw)
    assert result.original_message_id == "m-5@mb.example.com"
    assert result.original_headers == {
        "x-mailbeacon-delivery": "01hrrrrrrrrrrrrrrrrrrrrrrr",
        "x-mailgun-variables": '{"campaign": "spring"}',
        "message-id": "<m-5@mb.example.com>",
        "from": "news@mb.example.com",
        "to": "judy@example.org",
    }


def test_dsn_fields_in_a_text_part_without_blank_lines() -> None:
    raw = mail("""
        From: MAILER-DAEMON@mx.example.net
        Subject: Returned mail
        Content-Type: text/plain

        Reporting-MTA: dns; mx.example.net
        Final-Recipient: rfc822; kim@example.org
        Action: failed
        Status: 5.1.1
        Final-Recipient: rfc822; lee@example.org
        Action: failed
        Status: 5.2.2
    """)
    results = parse(raw)
    assert [(r.recipient, r.reason) for r in results] == [
        ("kim@example.org", "userunknown"), ("lee@example.org", "mailboxfull")]


def test_user_unknown_after_data_is_not_hard() -> None:
    raw = mail("""
        From: Mail Delivery System <MAILER-DAEMON@mx.example.net>
        Subject: Mail delivery failed: returning message to sender

        This message was created automatically by mail delivery software.

          mo@example.org
            SMTP error from remote mail server after end of data:
            550 User unknown
    """)
    (result,) = parse(raw)
    assert (result.reason, result.hard, result.category) == ("filtered", False, Category.SOFT)


def test_crlf_message() -> None:
    assert parse(DSN_TWO_RECIPIENTS.replace(b"\n", b"\r\n")) == parse(DSN_TWO_RECIPIENTS)


def test_forwarded_bounce_is_read_from_the_attachment() -> None:
    raw = mail("""
        From: Owner <owner@example.net>
        Subject: Fwd: failure notice
        Content-Type: multipart/mixed; boundary="F"

        --F
        Content-Type: text/plain

        This came back, see below.
        --F
        Content-Type: message/rfc822

        """) + QMAIL + b"\n--F--\n"
    results = parse(raw)
    assert [(r.recipient, r.status) for r in results] == [
        ("heidi@example.org", "5.1.1"), ("ivan@example.org", "5.1.2")]


def test_exim_failed_recipients_header_names_the_address() -> None:
    raw = mail("""
        From: Mail Delivery System <Mailer-Daemon@mx.example.net>
        Subject: Mail delivery failed: returning message to sender
        Auto-Submitted: auto-replied
        X-Failed-Recipients: quinn@example.org

        This message was created automatically by mail delivery software.

        A message that you sent could not be delivered to one or more of its
        recipients. This is a permanent error. The following address(es) failed:

          quinn@example.org
            Unrouteable address
    """)
    (result,) = parse(raw)
    assert (result.kind, result.recipient, result.reason, result.hard) == (
        Kind.BOUNCE, "quinn@example.org", "hostunknown", True)


def test_multipart_with_a_lost_boundary_parameter() -> None:
    raw = mail("""
        From: post_master@mx.example.net
        Subject: Re: hello
        Content-Type: multipart/mixed; boundary="OUT"

        --OUT
        Content-Type: multipart/alternative;
        boundary="IN"

        --IN
        Content-Type: text/plain

        Error: Invalid user address
        550 - Requested action not taken: no such user here
          RCPT TO: rose@example.org
        --IN--
        --OUT--
    """)
    (result,) = parse(raw)
    assert (result.recipient, result.reply_code, result.reason) == (
        "rose@example.org", "550", "userunknown")


def test_amazon_ses_json_notification() -> None:
    raw = mail("""
        From: no-reply@sns.amazonaws.com
        Subject: AWS Notification Message
        Content-Type: text/plain

        {"notificationType":"Bounce","bounce":{"bounceType":"Permanent","bouncedRecipients":
         [{"emailAddress":"ned@example.org","action":"failed","status":"5.1.1",
         "diagnosticCode":"smtp; 550 5.1.1 user unknown"}]},"mail":{"headers":
         [{"name":"Message-ID","value":"<m-6@mb.example.com>"}]}}
    """)
    (result,) = parse(raw)
    assert (result.recipient, result.status, result.hard) == ("ned@example.org", "5.1.1", True)
    assert result.original_message_id == "m-6@mb.example.com"


def test_apple_unsubscribe_is_an_opt_out_complaint() -> None:
    raw = mail("""
        From: olga@example.org
        To: unsubscribe-token@mb.example.com
        Subject: unsubscribe
        X-Apple-Unsubscribe: true
        Content-Type: text/plain

        Apple Mail sent this email to unsubscribe.
    """)
    (result,) = parse(raw)
    assert (result.kind, result.recipient, result.feedback_type) == (
        Kind.COMPLAINT, "olga@example.org", "opt-out")


@pytest.mark.parametrize("raw", [
    b"",
    b"Subject: hi\n\njust a note",
    mail("""
        From: Pat <pat@example.org>
        Subject: original as attachment
        Content-Type: multipart/mixed; boundary="B"

        --B
        Content-Type: text/plain

        see attached
        --B
        Content-Type: message/rfc822

        From: x@example.net
        Subject: y

        z
        --B--
    """),
])
def test_ordinary_mail_is_not_a_report(raw: bytes) -> None:
    assert parse(raw) == [Result(Kind.NOT_A_REPORT)]


def test_result_json_shape() -> None:
    (result,) = parse(MAILBOX_FULL)
    assert list(result.to_json()) == [
        "kind", "recipient", "status", "reply_code", "hard", "category", "reason",
        "feedback_type", "diagnostic", "remote_mta", "permanent"]
    assert result.to_json()["category"] == "soft"


# --- classification tables ---------------------------------------------------------------

@pytest.mark.parametrize(("status", "code", "text", "reason", "category"), [
    ("5.1.1", "550", "User unknown", Reason.USER_UNKNOWN, Category.HARD),
    ("5.1.10", "550", "", Reason.USER_UNKNOWN, Category.HARD),
    ("5.1.2", "550", "", Reason.HOST_UNKNOWN, Category.HARD),
    ("5.4.4", "550", "unable to route", Reason.HOST_UNKNOWN, Category.HARD),
    ("5.1.6", "550", "", Reason.HAS_MOVED, Category.HARD),
    ("5.2.2", "552", "", Reason.MAILBOX_FULL, Category.SOFT),
    ("4.2.2", "452", "", Reason.MAILBOX_FULL, Category.SOFT),
    ("5.7.1", "550", "", Reason.BLOCKED, Category.POLICY),
    ("5.7.26", "550", "", Reason.AUTH_FAILURE, Category.POLICY),
    ("5.7.1", "550", "Message rejected as spam", Reason.SPAM_DETECTED, Category.POLICY),
    ("5.1.1", "550", "Mailbox full", Reason.MAILBOX_FULL, Category.SOFT),
    ("4.1.1", "450", "User unknown", Reason.USER_UNKNOWN, Category.SOFT),
    ("", "550", "No such user here", Reason.USER_UNKNOWN, Category.HARD),
    ("", "", "Host or domain name not found", Reason.HOST_UNKNOWN, Category.HARD),
    ("", "421", "", Reason.SYSTEM_ERROR, Category.SOFT),
    ("", "", "", Reason.UNDEFINED, Category.SOFT),
    ("4.4.7", "", "", Reason.EXPIRED, Category.SOFT),
])
def test_classify(status: str, code: str, text: str, reason: Reason, category: Category) -> None:
    assert classify(status, code, text) == (reason, category)


def test_canonical_status() -> None:
    assert canonical_status(Reason.MAILBOX_FULL, permanent=False) == "4.2.2"
    assert canonical_status(Reason.MAILBOX_FULL, permanent=True) == "5.2.2"
    assert canonical_status(Reason.BLOCKED, permanent=True) == ""


def test_pattern_table_uses_only_reason_words() -> None:
    words = {word for word, _ in patterns.TEXT_PATTERNS}
    assert words <= {r.value for r in Reason}


# --- robustness --------------------------------------------------------------------------

SAMPLES = [DSN_TWO_RECIPIENTS, MAILBOX_FULL, POLICY_BLOCK, ARF_REDACTED, VACATION, QMAIL]


def _corpus_samples() -> list[bytes]:
    folder = corpus_dir()
    if folder is None:
        return SAMPLES
    files = sorted(folder.glob("bsd/*.eml"))
    return SAMPLES + [f.read_bytes() for f in random.Random(7).sample(files, min(60, len(files)))]


CORPUS_SAMPLES = _corpus_samples()


def _check(results: list[Result]) -> None:
    assert results and all(isinstance(r, Result) for r in results)
    for r in results:
        r.to_json()
        assert len(r.diagnostic) <= 1000


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=4000))
def test_parse_never_raises_on_arbitrary_bytes(raw: bytes) -> None:
    _check(parse(raw))


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    sample=st.sampled_from(CORPUS_SAMPLES),
    cut=st.floats(min_value=0, max_value=1),
    edits=st.lists(st.tuples(st.floats(0, 1), st.binary(min_size=0, max_size=8)), max_size=6),
)
def test_parse_never_raises_on_mutated_reports(
    sample: bytes, cut: float, edits: list[tuple[float, bytes]]
) -> None:
    data = bytearray(sample[: max(1, int(len(sample) * cut))] if cut < 0.95 else sample)
    for where, junk in edits:
        at = int(len(data) * where)
        data[at : at + len(junk)] = junk  # overwrite: flips bytes, breaks boundaries
    _check(parse(bytes(data)))


@settings(max_examples=100, deadline=None)
@given(st.sampled_from(SAMPLES), st.sampled_from(["latin-1", "utf-16", "x-unknown", "bogus\x00"]))
def test_parse_survives_wrong_charsets(sample: bytes, charset: str) -> None:
    raw = sample.replace(b"Content-Type: text/plain", f"Content-Type: text/plain; charset={charset}"
                         .encode("latin-1"))
    _check(parse(raw))


def test_huge_message_is_parsed_within_the_cap() -> None:
    """A 30 MB attachment after the report: only the first MAX_INPUT_BYTES are parsed."""
    filler = (b"A" * 76 + b"\n") * (30 * 1024 * 1024 // 77)
    raw = DSN_TWO_RECIPIENTS.replace(
        b"--B--", b"--B\nContent-Type: application/octet-stream\n\n" + filler + b"\n--B--")
    assert len(raw) > 30 * 1024 * 1024 > MAX_INPUT_BYTES
    started = time.monotonic()
    results = parse(raw)
    assert time.monotonic() - started < 10
    assert [r.recipient for r in results] == ["ann@example.org", "bob@example.org"]


def test_huge_single_part_junk_is_not_a_report() -> None:
    raw = b"Subject: x\n\n" + b"user@example.org 550 5.1.1 " * (30 * 1024 * 1024 // 27)
    started = time.monotonic()
    results = parse(raw)
    assert time.monotonic() - started < 10
    _check(results)
