"""Pipelining across messages: the next transaction goes out before the previous reply.

Every result must still belong to its own message and recipient: servers here
refuse chosen recipients in the middle of a batch, close the session with 421
or drop it, and each outcome is checked against what the server really took.
"""

from __future__ import annotations

import contextlib
import select
import socket
import threading
import time
from collections.abc import Iterator

import pytest

from mailbridge import (
    Category,
    ConnectError,
    DeliveryClient,
    DeliveryOutcomeUnknown,
    RecipientsRefused,
    SenderRefused,
    SmtpSettings,
    send_many,
)
from mailbridge._addresses import parse_mailbox
from mailbridge._identity import OwnIdentity
from mailbridge.composer import PreparedMessage
from mailbridge.diagnosis import Diagnosis
from mailbridge.smtp import ConnectionPool, SmtpConnection, SmtpTransport
from mailbridge.testing import FakeSmtpServer
from mailbridge.testing.realservers import RealMailServers

from .conftest import PASSWORD, USER, alice_smtp

SENDER = "billing@example.test"


def _recipients(n: int) -> tuple[str, ...]:
    """Message n: 1 or 3 recipients; every 5th has all refused, every 3rd one of three."""
    if n % 5 == 4:
        return (f"gone{n}a@example.test", f"gone{n}b@example.test")
    if n % 3 == 1:
        return (f"r{n}a@example.test", f"gone{n}@example.test", f"r{n}b@example.test")
    return (f"r{n}@example.test",)


def _message(n: int, sender: str = SENDER) -> PreparedMessage:
    data = f"Subject: Invoice {n}\r\nMessage-ID: <{n}@example.test>\r\n\r\nInvoice {n}\r\n"
    return PreparedMessage(
        data=data.encode(),
        envelope_sender=sender,
        recipients=_recipients(n),
        message_id=f"<{n}@example.test>",
    )


def _client(settings: SmtpSettings, pool: ConnectionPool) -> DeliveryClient:
    return DeliveryClient(
        identity=OwnIdentity(parse_mailbox("Billing", SENDER)),
        transport=SmtpTransport(settings, pool=pool),
    )


def _received_once(server: FakeSmtpServer) -> dict[str, tuple[str, ...]]:
    """Subject -> recipients of every message the fake took; fails if one came twice."""
    subjects = [m.message["Subject"] for m in server.messages]
    assert len(subjects) == len(set(subjects)), "a message was delivered twice"
    return {m.message["Subject"]: m.rcpt_tos for m in server.messages}


def _refuse_gone(server: FakeSmtpServer, count: int) -> None:
    for n in range(count):
        for recipient in _recipients(n):
            if recipient.startswith("gone"):
                server.refuse_recipient(recipient)


def _check_attribution(
    outcomes: list,  # type: ignore[type-arg]
    count: int,
    received: dict[str, tuple[str, ...]],
    first: int = 0,
) -> None:
    """Each outcome matches its own message (number index + first); `received` maps
    subject to delivered recipients."""
    assert sorted(o.index for o in outcomes) == list(range(count))
    for outcome in outcomes:
        n = outcome.index + first
        wanted = tuple(r for r in _recipients(n) if not r.startswith("gone"))
        refused = {r for r in _recipients(n) if r.startswith("gone")}
        if not wanted:
            assert isinstance(outcome.error, RecipientsRefused), (n, outcome.error)
            assert set(outcome.error.refused) == refused
            assert f"Invoice {n}" not in received
            continue
        assert outcome.ok, (n, outcome.error)
        assert outcome.result.accepted == wanted
        assert set(outcome.result.refused) == refused
        assert received[f"Invoice {n}"] == wanted


class HoldingServer:
    """A plain SMTP server with PIPELINING (and CHUNKING when asked) on loopback.

    Before each final reply it notes whether the client had already sent the
    next transaction's commands (`ahead`). It answers MAIL after `delay`
    seconds, so client threads have queued their messages by then, and refuses
    a MAIL inside an open transaction (503) as real servers do. Recipients
    starting with "gone" and senders starting with "refused" are refused. With
    `drop_at=n` it closes the connection without a word once the n-th message
    (counting from 1) has fully arrived. Connections are served one after
    another; `deliveries` lists the subject of every message taken.
    """

    def __init__(self, *, chunking: bool, delay: float = 0.05, drop_at: int = 0) -> None:
        self.chunking = chunking
        self.delay = delay
        self.drop_at = drop_at
        self.arrived = 0
        self.ahead: list[bool] = []
        self.deliveries: list[str] = []
        self.received: dict[str, tuple[str, ...]] = {}
        self.connections = 0
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.failure: BaseException | None = None

    def __enter__(self) -> HoldingServer:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        with contextlib.suppress(OSError):
            self.listener.shutdown(socket.SHUT_RDWR)  # wakes the accept() below
        self.listener.close()
        self.thread.join(10)
        assert not self.thread.is_alive()
        if self.failure is not None:
            raise self.failure

    def settings(self) -> SmtpSettings:
        return SmtpSettings("127.0.0.1", self.port, "none", command_timeout=5, data_timeout=5)

    def _serve(self) -> None:
        self.listener.settimeout(10)
        for _ in range(20):
            try:
                conn, _ = self.listener.accept()
            except OSError:
                return
            self.connections += 1
            try:
                with conn:
                    conn.settimeout(10)
                    _Session(self, conn).run()
            except OSError:
                pass
            except BaseException as exc:  # reported by __exit__
                self.failure = exc
                return


class _Dropped(Exception):
    pass


class _Session:
    def __init__(self, server: HoldingServer, conn: socket.socket) -> None:
        self.server, self.conn = server, conn
        self.buffer = bytearray()
        self.mail: str | None = None
        self.rcpts: list[str] = []

    def _fill(self) -> bool:
        chunk = self.conn.recv(65536)
        self.buffer += chunk
        return bool(chunk)

    def line(self) -> str | None:
        while b"\r\n" not in self.buffer:
            if not self._fill():
                return None
        end = self.buffer.index(b"\r\n")
        text = bytes(self.buffer[:end]).decode()
        del self.buffer[: end + 2]
        return text

    def exactly(self, size: int) -> bytes:
        while len(self.buffer) < size:
            if not self._fill():
                raise ConnectionError("client went away mid-chunk")
        data = bytes(self.buffer[:size])
        del self.buffer[:size]
        return data

    def send(self, reply: str) -> None:
        self.conn.sendall(reply.encode() + b"\r\n")

    def finish_message(self, data: bytes) -> None:
        server = self.server
        server.arrived += 1
        if server.arrived == server.drop_at:
            raise _Dropped
        # Is the next transaction already here? (Waits a little for a late client.)
        waiting = bool(self.buffer) or bool(select.select([self.conn], [], [], 0.5)[0])
        server.ahead.append(waiting)
        subject = data.split(b"\r\n", 1)[0].decode().removeprefix("Subject: ")
        server.deliveries.append(subject)
        server.received[subject] = tuple(self.rcpts)
        self.mail, self.rcpts = None, []
        self.send("250 2.0.0 queued")

    def run(self) -> None:
        try:
            self._run()
        except _Dropped:
            self.conn.shutdown(socket.SHUT_RDWR)

    def _run(self) -> None:
        import time

        self.send("220 holding ESMTP")
        for _ in range(10_000):
            line = self.line()
            if line is None:
                return
            verb = line.split(" ")[0].upper()
            if verb == "EHLO":
                extra = "250-CHUNKING\r\n" if self.server.chunking else ""
                self.send(f"250-holding\r\n250-PIPELINING\r\n{extra}250 8BITMIME")
            elif verb == "MAIL":
                time.sleep(self.server.delay)
                if self.mail is not None:
                    self.send("503 5.5.1 nested MAIL command")
                elif "refused@" in line:
                    self.send("553 5.7.1 sender not allowed")
                else:
                    self.mail, self.rcpts = line, []
                    self.send("250 2.1.0 ok")
            elif verb == "RCPT":
                address = line.split("<", 1)[1].rstrip(">")
                if self.mail is None:
                    self.send("503 5.5.1 need MAIL first")
                elif address.startswith("gone"):
                    self.send("550 5.1.1 no such user")
                else:
                    self.rcpts.append(address)
                    self.send("250 2.1.5 ok")
            elif verb == "RSET":
                self.mail, self.rcpts = None, []
                self.send("250 2.0.0 ok")
            elif verb == "BDAT":
                data = self.exactly(int(line.split(" ")[1]))
                if self.mail is None or not self.rcpts:
                    self.send("554 5.5.1 no valid recipients")  # the transaction stays open
                else:
                    self.finish_message(data)
            elif verb == "DATA":
                if self.mail is None or not self.rcpts:
                    self.send("554 5.5.1 no valid recipients")
                    continue
                self.send("354 go ahead")
                lines = []
                while (body_line := self.line()) != ".":
                    if body_line is None:
                        return  # the client went away mid-message: nothing is delivered
                    lines.append(body_line)
                self.finish_message("\r\n".join(lines).encode())
            elif verb == "QUIT":
                self.send("221 bye")
                return
            else:
                self.send("502 5.5.2 not implemented")


@pytest.mark.parametrize("chunking", [False, True], ids=["data", "bdat"])
def test_next_transaction_goes_out_before_the_previous_reply(chunking: bool) -> None:
    count = 12
    with HoldingServer(chunking=chunking) as server:
        pool = ConnectionPool(max_per_server=1, messages_in_flight=4)
        client = _client(server.settings(), pool)
        messages = [(client, _message(n)) for n in range(count)]
        outcomes = list(send_many(messages, concurrency=4))
        pool.close()
    _check_attribution(outcomes, count, server.received)
    assert sorted(server.deliveries) == sorted(set(server.deliveries))  # nothing twice
    delivered = len(server.ahead)
    assert delivered == sum(1 for n in range(count) if n % 5 != 4)
    # every final reply but the last found the next transaction already waiting
    assert server.ahead[:-1] == [True] * (delivered - 1)


@pytest.mark.parametrize("chunking", [False, True], ids=["data", "bdat"])
def test_refusals_mid_batch_stay_with_their_messages(chunking: bool) -> None:
    count = 40
    with FakeSmtpServer(users={USER: PASSWORD}, chunking=chunking) as server:
        _refuse_gone(server, count)
        pool = ConnectionPool(max_per_server=2, messages_in_flight=4)
        client = _client(server.smtp_settings(), pool)
        outcomes = list(send_many(((client, _message(n)) for n in range(count)), concurrency=8))
        pool.close()
        received = _received_once(server)
        assert server.connections <= 2
    _check_attribution(outcomes, count, received)


@pytest.mark.parametrize("chunking", [False, True], ids=["data", "bdat"])
def test_a_refused_sender_affects_only_its_message(chunking: bool) -> None:
    with HoldingServer(chunking=chunking, delay=0.01) as server:
        pool = ConnectionPool(max_per_server=1, messages_in_flight=3)
        client = _client(server.settings(), pool)
        senders = {n: "refused@example.test" if n in (2, 3) else SENDER for n in range(8)}
        outcomes = list(
            send_many([(client, _message(n, senders[n])) for n in range(8)], concurrency=3)
        )
        pool.close()
    assert sorted(server.deliveries) == sorted(set(server.deliveries))
    for outcome in outcomes:
        n = outcome.index
        if n in (2, 3):
            assert isinstance(outcome.error, SenderRefused)
            assert f"Invoice {n}" not in server.received
        elif n % 5 == 4:
            assert isinstance(outcome.error, RecipientsRefused)
        else:
            assert outcome.ok and server.received[f"Invoice {n}"] == outcome.result.accepted


@pytest.mark.parametrize("chunking", [False, True], ids=["data", "bdat"])
def test_421_mid_batch_refuses_the_rest_explicitly(chunking: bool) -> None:
    with FakeSmtpServer(users={USER: PASSWORD}, chunking=chunking) as server:
        server.close_after = 5
        pool = ConnectionPool(max_per_server=1, messages_in_flight=4)
        client = _client(server.smtp_settings(), pool)
        messages = [(client, _message(n * 5)) for n in range(12)]  # one recipient each
        outcomes = list(send_many(messages, concurrency=4))
        pool.close()
        subjects = set(_received_once(server))
    assert len(subjects) == 5
    for outcome in outcomes:
        subject = f"Invoice {outcome.index * 5}"
        if outcome.ok:
            assert subject in subjects
        else:
            assert subject not in subjects
            assert isinstance(outcome.error, ConnectError)
            assert outcome.error.temporary  # the server said 421: nothing was taken
            assert outcome.error.diagnosis.category != Category.OUTCOME_UNKNOWN
    assert sum(o.ok for o in outcomes) == 5


@pytest.mark.parametrize("chunking", [False, True], ids=["data", "bdat"])
def test_a_dropped_connection_settles_each_message_by_how_far_it_got(chunking: bool) -> None:
    # The server vanishes once the 3rd message has arrived, before answering it.
    count = 10
    with HoldingServer(chunking=chunking, drop_at=3, delay=0.02) as server:
        pool = ConnectionPool(max_per_server=1, messages_in_flight=4)
        client = _client(server.settings(), pool)
        messages = [(client, _message(n * 5)) for n in range(count)]  # one recipient each
        outcomes = list(send_many(messages, concurrency=4))
        pool.close()
    delivered = server.deliveries
    assert sorted(delivered) == sorted(set(delivered))  # nothing twice
    unknown = []
    for outcome in outcomes:
        subject = f"Invoice {outcome.index * 5}"
        if outcome.ok:
            assert subject in delivered  # never a false success
            continue
        error = outcome.error
        assert isinstance(error, DeliveryOutcomeUnknown)
        # Only a message whose bytes went out may be left unknown; it is never resent.
        assert error.diagnosis.category == Category.OUTCOME_UNKNOWN, error
        assert not error.temporary
        unknown.append(subject)
    assert unknown, "the message the server swallowed must be reported as unknown"
    assert set(delivered) | set(unknown) == {f"Invoice {n * 5}" for n in range(count)}
    assert server.connections == 2
    if not chunking:
        # With DATA only the message being answered had its bytes out; the envelope
        # sent behind it was retried on the new connection and delivered.
        assert len(unknown) == 1


def test_servers_without_pipelining_get_one_message_at_a_time() -> None:
    with FakeSmtpServer(users={USER: PASSWORD}, pipelining=False) as server:
        _refuse_gone(server, 10)
        pool = ConnectionPool(max_per_server=1, messages_in_flight=4)
        client = _client(server.smtp_settings(), pool)
        outcomes = list(send_many([(client, _message(n)) for n in range(10)], concurrency=4))
        pool.close()
        received = _received_once(server)
        assert server.connections == 1
    _check_attribution(outcomes, 10, received)


@pytest.mark.parametrize("mode", ["data", "bdat", "lockstep"])
def test_threads_sharing_one_connection_each_get_their_own_result(mode: str) -> None:
    if mode == "lockstep":
        server_cm: object = FakeSmtpServer(tls="none", pipelining=False)
    else:
        server_cm = HoldingServer(chunking=mode == "bdat", delay=0.02)
    with server_cm as server:  # type: ignore[attr-defined]
        if mode == "lockstep":
            _refuse_gone(server, 12)
            settings = server.smtp_settings()
        else:
            settings = server.settings()
        connection = SmtpConnection.open(settings)
        results: dict[int, object] = {}

        def send(n: int) -> None:
            try:
                results[n] = connection.send(SENDER, _recipients(n), _message(n).data)
            except (RecipientsRefused, SenderRefused) as exc:
                results[n] = exc

        threads = [threading.Thread(target=send, args=(n,), daemon=True) for n in range(12)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(20)
        assert not any(thread.is_alive() for thread in threads)
        connection.quit()
    assert set(results) == set(range(12))
    for n, result in results.items():
        if n % 5 == 4:
            assert isinstance(result, RecipientsRefused)
        else:
            assert result.accepted == tuple(  # type: ignore[attr-defined]
                r for r in _recipients(n) if not r.startswith("gone")
            )


class _Interrupt(BaseException):
    pass


def test_a_thread_interrupted_with_its_message_on_the_wire_ends_the_connection() -> None:
    from mailbridge.smtp import pipeline

    with HoldingServer(chunking=False, delay=0.2) as server:
        pool = ConnectionPool(max_per_server=1, messages_in_flight=2)
        client = _client(server.settings(), pool)
        results: dict[str, object] = {}
        original_wait = pipeline.threading.Condition.wait

        def interrupted_wait(self: threading.Condition, timeout: float | None = None) -> bool:
            if threading.current_thread().name == "victim":
                # Meanwhile the driver writes our envelope behind the first message.
                until = time.monotonic() + 0.5
                while (left := until - time.monotonic()) > 0:
                    original_wait(self, left)  # releases the lock, as a real wait does
                raise _Interrupt
            return original_wait(self, timeout)

        def send(n: int) -> None:
            try:
                results[threading.current_thread().name] = client.send(_message(n))
            except BaseException as exc:
                results[threading.current_thread().name] = exc

        first = threading.Thread(target=send, args=(0,), name="first", daemon=True)
        victim = threading.Thread(target=send, args=(3,), name="victim", daemon=True)
        with _patched(pipeline.threading.Condition, "wait", interrupted_wait):
            first.start()
            time.sleep(0.05)  # the first envelope is on the wire, its replies delayed
            victim.start()
            victim.join(10)
            first.join(10)
        assert not victim.is_alive() and not first.is_alive()
        assert isinstance(results["victim"], _Interrupt)
        assert results["first"].ok  # type: ignore[union-attr]
        # The connection, with the victim's envelope still unanswered on it, was closed
        # rather than pooled: the next send gets a new one and is not confused.
        assert client.send(_message(6)).accepted == ("r6@example.test",)
        pool.close()
    assert server.deliveries == ["Invoice 0", "Invoice 6"]  # the victim's never went out
    assert server.connections == 2


def test_a_health_check_is_never_shared() -> None:
    with HoldingServer(chunking=False, delay=0.01) as server:
        pool = ConnectionPool(max_per_server=1, messages_in_flight=4, health_check_after=0)
        client = _client(server.settings(), pool)
        assert client.send(_message(0)).ok
        outcomes = list(send_many([(client, _message(n)) for n in range(1, 13)], concurrency=6))
        pool.close()
    received = dict(server.received)
    _check_attribution(outcomes, 12, received, first=1)


def test_a_failing_opener_frees_its_place() -> None:
    calls = []

    def flaky(settings: SmtpSettings) -> SmtpConnection:
        calls.append(settings)
        if len(calls) == 1:
            raise ConnectError(
                "refused once", diagnosis=Diagnosis(Category.CONNECTION_REFUSED, "refused")
            )
        return SmtpConnection.open(settings)

    with FakeSmtpServer(users={USER: PASSWORD}) as server:
        pool = ConnectionPool(max_per_server=1, opener=flaky)
        client = _client(server.smtp_settings(), pool)
        with pytest.raises(ConnectError):
            client.send(_message(0))
        assert client.send(_message(3)).ok  # not blocked by the failed attempt's place
        pool.close()


@contextlib.contextmanager
def _patched(owner: object, name: str, value: object) -> Iterator[None]:
    original = getattr(owner, name)
    setattr(owner, name, value)
    try:
        yield
    finally:
        setattr(owner, name, original)


@pytest.fixture
def postfix_client(mta: RealMailServers) -> Iterator[tuple[DeliveryClient, ConnectionPool]]:
    pool = ConnectionPool(max_per_server=1, messages_in_flight=4)
    yield _client(alice_smtp(mta), pool), pool
    pool.close()


@pytest.mark.realserver
@pytest.mark.parametrize("chunking", [False, True], ids=["data", "bdat"])
def test_postfix_pipelined_batch_with_refusals(
    mta: RealMailServers, chunking: bool, postfix_client: tuple[DeliveryClient, ConnectionPool]
) -> None:
    import attrs

    client, _ = postfix_client
    client.transport.settings = attrs.evolve(client.transport.settings, chunking=chunking)  # type: ignore[attr-defined]

    def message(n: int) -> PreparedMessage:
        recipients = {
            0: ("bob@example.test",),
            1: ("bob@example.test", "nobody@example.test"),
            2: ("nobody@example.test",),
        }[n % 3]
        data = f"Subject: Pipelined {chunking} {n}\r\n\r\nBody {n}\r\n".encode()
        return PreparedMessage(data, "alice@example.test", recipients, f"<p{n}@example.test>")

    outcomes = list(send_many([(client, message(n)) for n in range(12)], concurrency=4))
    for outcome in outcomes:
        if outcome.index % 3 == 2:
            assert isinstance(outcome.error, RecipientsRefused)
        else:
            assert outcome.ok, outcome.error
            assert outcome.result.accepted == ("bob@example.test",)
            assert set(outcome.result.refused) == (
                {"nobody@example.test"} if outcome.index % 3 == 1 else set()
            )
    delivered = mta.wait_for_messages("bob@example.test", count=8)
    subjects = sorted(
        line for raw in delivered for line in raw.decode().splitlines() if "Pipelined" in line
    )
    wanted = sorted(f"Subject: Pipelined {chunking} {n}" for n in range(12) if n % 3 != 2)
    assert [s for s in subjects if s.startswith(f"Subject: Pipelined {chunking} ")] == wanted
