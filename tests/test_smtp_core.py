"""The sans-I/O SMTP core, byte for byte: replies, opening a session, framing, no I/O inside."""

from __future__ import annotations

import ast
import base64
import hmac
import re
from collections.abc import Generator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mailbridge import Security, SmtpSettings
from mailbridge.composer import check_transmittable
from mailbridge.diagnosis import Category
from mailbridge.errors import (
    AuthenticationError,
    ConnectError,
    MessageFormatError,
    ProtocolError,
    TlsError,
)
from mailbridge.reply import SmtpReply
from mailbridge.smtp._core import (
    Command,
    ReplyReader,
    ehlo_exchange,
    frame_data,
    login_exchange,
    normalize_data,
    starttls_exchange,
)

CORE = Path(__file__).resolve().parents[1] / "src" / "mailbridge" / "smtp" / "_core"
USER, PASSWORD = "user@example.test", "s3cret-password"


def _settings(**kwargs: Any) -> SmtpSettings:
    values: dict[str, Any] = {"host": "127.0.0.1", "port": 587, "security": Security.STARTTLS}
    values.update(kwargs)
    return SmtpSettings(**values)


def _drive(
    exchange: Generator[Command, SmtpReply, Any], replies: list[bytes]
) -> tuple[list[bytes], Any]:
    """Run an exchange against scripted reply bytes; the bytes written and its result."""
    written: list[bytes] = []
    reader = ReplyReader()
    try:
        command = next(exchange)
        for raw in replies:
            written.append(command.data)
            reader.feed(raw)
            reply = reader.next_reply()
            assert reply is not None
            command = exchange.send(reply)
        raise AssertionError(f"the exchange wanted more: {command.data!r}")
    except StopIteration as done:
        return written, done.value


# -- replies -------------------------------------------------------------------


def _all_replies(reader: ReplyReader) -> list[SmtpReply]:
    replies = []
    while (reply := reader.next_reply()) is not None:
        replies.append(reply)
    return replies


def test_multiline_reply_with_enhanced_codes() -> None:
    reader = ReplyReader()
    reader.feed(b"250-2.1.0 first\r\n250-2.1.0 second\r\n250 2.1.0 last\r\n550 5.1.1 no")
    assert _all_replies(reader) == [SmtpReply(250, "2.1.0", "first\nsecond\nlast")]
    assert reader.buffered
    reader.feed(b" such user\r\n")
    assert _all_replies(reader) == [SmtpReply(550, "5.1.1", "no such user")]
    assert not reader.buffered


@pytest.mark.parametrize(
    "data",
    [
        b"hello\r\n",
        b"250x\r\n",
        b"600 six\r\n",
        b"25\r\n",
        b"250-a\r\n251 b\r\n",  # mixed codes
        b"250 " + b"a" * 5000 + b"\r\n",  # too long, with its end
        b"250 " + b"a" * 5000,  # too long, no end yet: refused before it ends
        b"250-x\r\n" * 201,  # too many lines
    ],
)
def test_broken_replies_are_protocol_errors(data: bytes) -> None:
    reader = ReplyReader()
    reader.feed(data)
    with pytest.raises(ProtocolError):
        _all_replies(reader)


_LINE_TEXT = st.text(alphabet=st.characters(min_codepoint=32, max_codepoint=126), max_size=30).map(
    lambda text: text.encode()
)


@st.composite
def _reply_bytes(draw: st.DrawFn) -> bytes:
    code = draw(st.sampled_from([220, 250, 251, 334, 354, 421, 450, 452, 550, 554]))
    status = draw(st.sampled_from(["", f"{str(code)[0]}.1.1 ", "2.0.0 "]))
    lines = draw(st.lists(_LINE_TEXT, min_size=1, max_size=4))
    out = b""
    for index, text in enumerate(lines):
        sep = b" " if index == len(lines) - 1 else b"-"
        out += str(code).encode() + sep + status.encode() + text + b"\r\n"
    return out


def _events(chunks: list[bytes]) -> list[object]:
    reader = ReplyReader()
    events: list[object] = []
    try:
        for chunk in chunks:
            reader.feed(chunk)
            while (reply := reader.next_reply()) is not None:
                events.append(reply)
    except ProtocolError as exc:
        events.append(("error", str(exc)))
    return events


@settings(max_examples=60, deadline=None)
@given(st.lists(_reply_bytes(), min_size=1, max_size=6), st.binary(max_size=8))
def test_replies_split_at_every_byte_boundary_are_the_same(
    replies: list[bytes], tail: bytes
) -> None:
    data = b"".join(replies) + tail
    whole = _events([data])
    assert len([e for e in whole if isinstance(e, SmtpReply)]) >= (0 if tail else len(replies))
    for cut in range(len(data) + 1):
        assert _events([data[:cut], data[cut:]]) == whole
    assert _events([data[i : i + 1] for i in range(len(data))]) == whole


@settings(max_examples=60, deadline=None)
@given(st.lists(_reply_bytes(), min_size=1, max_size=8), st.data())
def test_replies_split_at_random_boundaries_are_the_same(
    replies: list[bytes], data: st.DataObject
) -> None:
    raw = b"".join(replies)
    cuts = sorted(data.draw(st.lists(st.integers(0, len(raw)), max_size=10)))
    chunks = [raw[a:b] for a, b in zip([0, *cuts], [*cuts, len(raw)], strict=True)]
    assert _events(chunks) == _events([raw])


# -- opening a session ----------------------------------------------------------


def test_ehlo_parses_extensions() -> None:
    written, extensions = _drive(
        ehlo_exchange("[127.0.0.1]"),
        [
            b"250-mx.example greets\r\n250-PIPELINING\r\n250-SIZE 1000\r\n250-AUTH=LOGIN\r\n"
            b"250 8bitmime\r\n"
        ],
    )
    assert written == [b"EHLO [127.0.0.1]\r\n"]
    assert extensions == {"PIPELINING": "", "SIZE": "1000", "AUTH": "LOGIN", "8BITMIME": ""}


def test_ehlo_falls_back_to_helo_and_refuses_421() -> None:
    written, extensions = _drive(ehlo_exchange("h"), [b"502 what\r\n", b"250 hi\r\n"])
    assert written == [b"EHLO h\r\n", b"HELO h\r\n"] and extensions == {}
    with pytest.raises(ConnectError) as info:
        _drive(ehlo_exchange("h"), [b"421 busy\r\n"])
    assert info.value.diagnosis.category is Category.SERVER_UNAVAILABLE
    with pytest.raises(ProtocolError):
        _drive(ehlo_exchange("h"), [b"502 no\r\n", b"502 no\r\n"])


def test_starttls_drops_bytes_injected_after_the_220() -> None:
    reader = ReplyReader()
    exchange = starttls_exchange({"STARTTLS": ""}, _settings(), reader)
    assert next(exchange).data == b"STARTTLS\r\n"
    reader.feed(b"220 go ahead\r\n250-injected\r\n250 AUTH PLAIN\r\n")
    reply = reader.next_reply()
    assert reply is not None
    with pytest.raises(StopIteration):  # returned: start TLS now
        exchange.send(reply)
    assert not reader.buffered  # the injected replies are gone, never read
    assert reader.next_reply() is None


def test_starttls_not_offered_or_refused() -> None:
    with pytest.raises(TlsError) as info:
        next(starttls_exchange({}, _settings(), ReplyReader()))
    assert info.value.diagnosis.category is Category.STARTTLS_NOT_OFFERED
    with pytest.raises(TlsError):
        _drive(starttls_exchange({"STARTTLS": ""}, _settings(), ReplyReader()), [b"454 no\r\n"])


def _b64(text: str) -> bytes:
    return base64.b64encode(text.encode())


def test_auth_plain_bytes_and_secret_hidden() -> None:
    settings = _settings(username=USER, password=PASSWORD)
    exchange = login_exchange({"AUTH": "PLAIN LOGIN"}, settings, encrypted=True)
    command = next(exchange)
    assert command.data == b"AUTH PLAIN " + _b64(f"\x00{USER}\x00{PASSWORD}") + b"\r\n"
    assert PASSWORD not in command.shown and "PLAIN" in command.shown
    with pytest.raises(StopIteration) as done:
        exchange.send(SmtpReply(235))
    assert done.value.value == f"PLAIN as {USER}"


def test_auth_login_and_cram_md5_bytes() -> None:
    settings = _settings(username=USER, password=PASSWORD, auth_mechanism="LOGIN")
    written, _ = _drive(
        login_exchange({"AUTH": "LOGIN"}, settings, encrypted=True),
        [b"334 VXNlcm5hbWU6\r\n", b"334 UGFzc3dvcmQ6\r\n", b"235 ok\r\n"],
    )
    assert written == [b"AUTH LOGIN\r\n", _b64(USER) + b"\r\n", _b64(PASSWORD) + b"\r\n"]
    challenge = b"<1.2@mx.example>"
    settings = _settings(username=USER, password=PASSWORD, auth_mechanism="CRAM-MD5")
    written, _ = _drive(
        login_exchange({"AUTH": "CRAM-MD5"}, settings, encrypted=True),
        [b"334 " + base64.b64encode(challenge) + b"\r\n", b"235 ok\r\n"],
    )
    digest = hmac.new(PASSWORD.encode(), challenge, "md5").hexdigest()
    assert written == [b"AUTH CRAM-MD5\r\n", _b64(f"{USER} {digest}") + b"\r\n"]


def test_auth_xoauth2_error_is_diagnosed() -> None:
    settings = _settings(username=USER, oauth2_token=lambda: "tok")
    error = base64.b64encode(b'{"status":"401","schemes":"Bearer"}')
    with pytest.raises(AuthenticationError) as info:
        _drive(
            login_exchange({"AUTH": "XOAUTH2"}, settings, encrypted=True, token="tok"),
            [b"334 " + error + b"\r\n", b"535 5.7.8 bad\r\n"],
        )
    assert "status=401" in str(info.value.reply)


def test_oauthbearer_is_chosen_when_offered_and_ends_a_failure_with_0x01() -> None:
    # RFC 7628 3.2.3: after the server's error challenge the client sends %x01 alone.
    settings = _settings(username=USER, oauth2_token=lambda: "unused")
    exchange = login_exchange(
        {"AUTH": "XOAUTH2 OAUTHBEARER PLAIN"}, settings, encrypted=True, token="ya29.SECRET"
    )
    first = next(exchange)
    assert first.data.startswith(b"AUTH OAUTHBEARER ")
    assert base64.b64decode(first.data.split()[2]) == (
        f"n,a={USER},\x01host=127.0.0.1\x01port=587\x01auth=Bearer ya29.SECRET\x01\x01".encode()
    )
    assert b"SECRET" not in first.shown.encode()
    error = base64.b64encode(b'{"status":"invalid_token","schemes":"bearer"}').decode()
    second = exchange.send(SmtpReply(334, None, error))
    assert second.data == b"AQ==\r\n"
    with pytest.raises(AuthenticationError) as info:
        exchange.send(SmtpReply(535, "5.7.8", "bad"))
    assert "status=invalid_token" in str(info.value.reply)
    assert "SECRET" not in str(info.value)


def test_xoauth2_is_used_when_oauthbearer_is_not_offered() -> None:
    settings = _settings(username=USER, oauth2_token=lambda: "unused")
    written, _ = _drive(
        login_exchange({"AUTH": "PLAIN XOAUTH2"}, settings, encrypted=True, token="tok"),
        [b"235 ok\r\n"],
    )
    assert base64.b64decode(written[0].split()[2]) == (
        f"user={USER}\x01auth=Bearer tok\x01\x01".encode()
    )


def test_auth_refused_before_any_password_without_tls() -> None:
    settings = _settings(username=USER, password=PASSWORD)
    with pytest.raises(AuthenticationError) as info:
        next(login_exchange({"AUTH": "PLAIN"}, settings, encrypted=False))
    assert info.value.diagnosis.category is Category.AUTH_REQUIRES_TLS


# -- no I/O inside -----------------------------------------------------------------

FORBIDDEN = {"socket", "ssl", "threading", "time", "select", "asyncio", "selectors"}


def test_the_core_imports_no_io() -> None:
    modules = sorted(CORE.glob("*.py"))
    assert len(modules) >= 5
    for path in modules:
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0:
                names = [node.module or ""]
            else:
                continue
            for name in names:
                assert name.split(".")[0] not in FORBIDDEN, f"{path.name} imports {name}"


def _reference_normalize(data: bytes) -> bytes:
    """The framing before the one-pass fast path: substitute line endings, then check."""
    normalized = re.sub(rb"\r\n|\r|\n", b"\r\n", data)
    if not normalized.endswith(b"\r\n"):
        normalized += b"\r\n"
    check_transmittable(normalized)
    return normalized


@settings(max_examples=300, deadline=None)
@given(
    st.lists(st.sampled_from([b"a", b".", b"\r", b"\n", b"\r\n", b"\x00", b"x" * 500]), max_size=12)
)
def test_framing_fast_path_matches_the_reference(parts: list[bytes]) -> None:
    data = b"".join(parts)
    try:
        expected: bytes | type[Exception] = _reference_normalize(data)
    except MessageFormatError:
        expected = MessageFormatError
    try:
        got: bytes | type[Exception] = normalize_data(data)
    except MessageFormatError:
        got = MessageFormatError
    assert got == expected
    if isinstance(expected, bytes):
        stuffed = re.sub(rb"(?m)^\.", b"..", expected) + b".\r\n"
        assert frame_data(data) == stuffed


def _smtp_imports() -> dict[str, set[str]]:
    """Module -> the smtp modules it imports (also under TYPE_CHECKING or in functions)."""
    smtp = CORE.parent
    names = {
        ".".join(path.relative_to(smtp).with_suffix("").parts): path for path in smtp.rglob("*.py")
    }
    graph: dict[str, set[str]] = {}
    for name, path in names.items():
        package = name.split(".")[:-1]  # a package's __init__ sits inside it, like a module
        deps: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if not isinstance(node, ast.ImportFrom) or node.level == 0:
                continue
            base = package[: len(package) - (node.level - 1)] if node.level > 1 else package
            if node.level - 1 > len(package):
                continue  # above smtp/: not part of this graph
            target = [*base, *(node.module.split(".") if node.module else [])]
            for alias in node.names:
                for candidate in (".".join([*target, alias.name]), ".".join(target)):
                    for module in (candidate, f"{candidate}.__init__" if candidate else "__init__"):
                        if module in names and module != name:
                            deps.add(module)
                            break
        graph[name] = deps
    return graph


def _cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """An import cycle in `graph` (as the modules along it), or None."""
    visiting: list[str] = []
    done: set[str] = set()

    def visit(module: str) -> list[str] | None:
        if module in visiting:
            return [*visiting[visiting.index(module) :], module]
        if module in done:
            return None
        visiting.append(module)
        for dep in sorted(graph[module]):
            found = visit(dep)
            if found:
                return found
        visiting.pop()
        done.add(module)
        return None

    for module in sorted(graph):
        found = visit(module)
        if found:
            return found
    return None


def test_no_import_cycle_inside_smtp() -> None:
    graph = _smtp_imports()
    assert {"connection", "pipeline", "_core._pipeline", "_core._plan"} <= set(graph)
    assert graph["connection"] >= {"pipeline", "_core.__init__"}
    assert _cycle(graph) is None


def test_oauth_initial_responses_are_byte_exact_with_rfc_7628_and_googles_xoauth2() -> None:
    from mailbridge.smtp._core import oauth_initial_response

    # RFC 7628 3.1: gs2-header "n,a=" saslname "," (RFC 5801: "=" -> "=3D", "," -> "=2C"),
    # then host, port and auth kvpairs each ended by ^A, and a final ^A.
    assert oauth_initial_response("OAUTHBEARER", "a,b=c@x.test", "T0k", "smtp.x.test", 587) == (
        "n,a=a=2Cb=3Dc@x.test,\x01host=smtp.x.test\x01port=587\x01auth=Bearer T0k\x01\x01"
    )
    # Google's XOAUTH2: "user=" {User} "^Aauth=Bearer " {Access Token} "^A^A", no escaping.
    assert oauth_initial_response("XOAUTH2", "a@x.test", "T0k") == (
        "user=a@x.test\x01auth=Bearer T0k\x01\x01"
    )


def test_a_hostile_oauth_error_challenge_is_cut_and_stripped_of_control_characters() -> None:
    settings = _settings(username=USER, oauth2_token=lambda: "tok")
    hostile = '{"status":"401\\r\\nX-Injected: yes\\u0000","scope":"%s"}' % ("s" * 400)
    with pytest.raises(AuthenticationError) as info:
        _drive(
            login_exchange({"AUTH": "XOAUTH2"}, settings, encrypted=True, token="tok"),
            [b"334 " + base64.b64encode(hostile.encode()) + b"\r\n", b"535 5.7.8 bad\r\n"],
        )
    text = str(info.value.reply)
    assert "status=401 X-Injected: yes" in text
    assert not any(ch in text for ch in "\r\n\x00") and len(text) < 600


def test_a_server_wanting_more_after_the_oauth_error_challenge_gets_a_cancel() -> None:
    settings = _settings(username=USER, oauth2_token=lambda: "tok")
    error = base64.b64encode(b'{"status":"invalid_token"}')
    exchange = login_exchange({"AUTH": "OAUTHBEARER"}, settings, encrypted=True, token="tok")
    next(exchange)
    assert exchange.send(SmtpReply(334, None, error.decode())).data == b"AQ==\r\n"
    # RFC 4954 4: the client cancels an exchange it cannot continue with "*".
    assert exchange.send(SmtpReply(334, None, "")).data == b"*\r\n"
    with pytest.raises(AuthenticationError):
        exchange.send(SmtpReply(501, "5.7.0", "cancelled"))
