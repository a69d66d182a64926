"""The thread driving a shared connection notices every joiner at once.

A joiner queues its message and nudges the driver through a wake-up socket.
A nudge can be stale: the driver may already have written that message in
the same pass. After any nudge, the driver must go back to waiting on both
the connection and the wake-up socket; falling through to a blocking read
left the next joiner's message unwritten for a whole round trip (seen as
one slot in eight of a 3-message window going out 20 ms late at 10 ms each
way). These tests script the connection, so the order is deterministic.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

from mailbridge import SmtpSettings
from mailbridge.reply import SmtpReply
from mailbridge.smtp._core import Attempt, ReplyReader, plan_attempt
from mailbridge.smtp.pipeline import Pipeline
from mailbridge.smtp.wire import Channel

EXTENSIONS = {"PIPELINING": "", "CHUNKING": "", "8BITMIME": ""}
OK = SmtpReply(250, "2.0.0", "OK")
JOIN_WAIT = 5.0  # seconds a scripted step waits for a joiner thread to queue


def _attempt(n: int) -> Attempt:
    raw = f"Subject: {n}\r\n\r\nInvoice {n}\r\n".encode()
    return plan_attempt(EXTENSIONS, "billing@example.test", [f"r{n}@example.test"], raw)


class ScriptedLink:
    """A shared, pipelining connection whose waits follow a script.

    `wait_readable` runs the next step of `steps` (each returns what the real
    channel would: True readable, False woken by a joiner). Once a step has
    made replies "arrive" (`arrive`), `read_reply` hands them out in order;
    reading before they arrived is the bug under test: the real socket would
    block until the server's next reply.
    """

    def __init__(self) -> None:
        self.settings = SmtpSettings("127.0.0.1", 25, "none", command_timeout=5, data_timeout=5)
        self.reader = ReplyReader()
        self.shareable = True
        self.is_open = True
        self.events: list[str] = []
        self.steps: list[Callable[[], bool]] = []
        self.replies: list[SmtpReply] = []
        self.arrived = False

    @property
    def pipelining(self) -> bool:
        return True

    @property
    def channel(self) -> Channel:
        return self  # type: ignore[return-value]  # only wait_readable is used

    def wait_readable(self, other: object, timeout: float) -> bool | None:
        self.events.append("wait")
        if self.arrived:
            return True
        return self.steps.pop(0)() if self.steps else None

    def read_reply(self, what: str, timeout: float | None = None) -> SmtpReply:
        assert self.arrived, f"blocking read for {what} although no reply had arrived"
        self.events.append("read")
        return self.replies.pop(0)

    def write_bytes(
        self, data: bytes, timeout: float | None = None, *, keep_open: bool = False
    ) -> None:
        subject = data.split(b"Subject: ", 1)[1].split(b"\r\n", 1)[0].decode()
        self.events.append(f"write {subject}")

    def arrive(self, count: int) -> bool:
        self.replies.extend([OK] * count)
        self.arrived = True
        return True

    def shutdown(self) -> None:
        self.is_open = False

    def close(self) -> None:
        self.is_open = False


def _wait_until(condition: Callable[[], bool]) -> None:
    deadline = time.monotonic() + JOIN_WAIT
    while not condition():
        assert time.monotonic() < deadline, "the joiner never queued its message"
        time.sleep(0.001)


def test_a_stale_nudge_does_not_turn_into_a_blocking_read() -> None:
    link = ScriptedLink()
    pipeline = Pipeline(link)
    first, second = _attempt(1), _attempt(2)
    results: dict[str, object] = {}

    def joiner() -> None:
        results["second"] = pipeline.run(second).accepted

    thread = threading.Thread(target=joiner)

    def stale_nudge() -> bool:
        return False  # woken, but whatever woke it was written already

    def joiner_arrives() -> bool:
        thread.start()
        _wait_until(lambda: second in pipeline.core.queued)
        return False  # its nudge

    # First: MAIL, RCPT, BDAT. Second (after an open BDAT transaction): RSET too.
    link.steps = [stale_nudge, joiner_arrives, lambda: link.arrive(3 + 4)]
    try:
        results["first"] = pipeline.run(first).accepted
    finally:
        link.arrived = True  # a failed run must not leave the joiner waiting for replies
        thread.join(JOIN_WAIT)
    assert not thread.is_alive()
    assert results == {"first": ("r1@example.test",), "second": ("r2@example.test",)}
    # The joiner's message went out before any reply was read: no round trip lost.
    assert link.events[:5] == ["write 1", "wait", "wait", "write 2", "wait"]
    pipeline.close()


def test_nudges_without_messages_keep_the_driver_waiting_on_both() -> None:
    link = ScriptedLink()
    pipeline = Pipeline(link)
    link.steps = [lambda: False, lambda: False, lambda: False, lambda: link.arrive(3)]
    assert pipeline.run(_attempt(1)).accepted == ("r1@example.test",)
    assert link.events[:6] == ["write 1", "wait", "wait", "wait", "wait", "read"]
    assert link.events.count("read") == 3
    pipeline.close()
