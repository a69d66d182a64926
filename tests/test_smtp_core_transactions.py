"""The sans-I/O SMTP core's transactions, byte for byte: plans, groups, settlement."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mailbridge.diagnosis import Category, Diagnosis
from mailbridge.errors import (
    ConnectError,
    DeliveryError,
    DeliveryOutcomeUnknown,
    MessageRejected,
    RecipientsRefused,
    SenderRefused,
)
from mailbridge.reply import SmtpReply
from mailbridge.smtp._core import (
    Attempt,
    ReplyReader,
    Stage,
    TransactionQueue,
    plan_attempt,
)

EXTENSIONS = {"PIPELINING": "", "8BITMIME": "", "SIZE": "1000000"}
CHUNKING = {**EXTENSIONS, "CHUNKING": ""}
BODY = b"Subject: t\r\n\r\nhello\r\n"


def _lost(text: str) -> ConnectError:
    return ConnectError(text, diagnosis=Diagnosis(Category.CONNECTION_LOST, text), temporary=True)


def _attempt(
    recipients: tuple[str, ...] = ("a@x.test",), extensions: dict[str, str] | None = None
) -> Attempt:
    return plan_attempt(extensions or EXTENSIONS, "s@x.test", recipients, BODY)


def _queue(pipelining: bool = True) -> TransactionQueue:
    return TransactionQueue(ReplyReader(), pipelining=pipelining)


def _feed(queue: TransactionQueue, data: bytes) -> list[Attempt]:
    queue.receive_data(data)
    return queue.process()


def test_pipelined_data_transaction_byte_for_byte() -> None:
    queue, attempt = _queue(), _attempt(("a@x.test", "b@x.test"))
    queue.enqueue(attempt)
    out = queue.data_to_send()
    assert out.data == (
        b"MAIL FROM:<s@x.test> SIZE=24\r\nRCPT TO:<a@x.test>\r\nRCPT TO:<b@x.test>\r\nDATA\r\n"
    )
    assert not out.message and attempt.stage is Stage.ENVELOPE_SENT
    assert _feed(queue, b"250 ok\r\n250 ok\r\n550 5.1.1 no\r\n") == []
    assert queue.data_to_send().data == b""  # nothing before the 354
    assert _feed(queue, b"354 go\r\n") == []
    out = queue.data_to_send()
    assert out.data == BODY + b".\r\n" and out.message and attempt.data_started
    assert _feed(queue, b"250 2.0.0 queued\r\n") == [attempt]
    result = attempt.outcome()
    assert result.accepted == ("a@x.test",) and list(result.refused) == ["b@x.test"]
    assert queue.settled and queue.messages_sent == 1


def test_data_ends_a_group_and_the_next_envelope_follows_the_message() -> None:
    queue, first, second = _queue(), _attempt(), _attempt(("b@x.test",))
    queue.enqueue(first)
    queue.enqueue(second)
    assert queue.data_to_send().data.count(b"MAIL FROM") == 1  # DATA ends the group
    assert not queue.may_write and queue.writes_wait_for_reply
    assert _feed(queue, b"250 ok\r\n250 ok\r\n354 go\r\n") == []
    out = queue.data_to_send()  # the message, then the next envelope in the same write
    assert out.data.startswith(BODY + b".\r\nMAIL FROM:<s@x.test>")
    assert out.data.endswith(b"RCPT TO:<b@x.test>\r\nDATA\r\n") and not second.reset
    assert queue.writes_wait_for_reply  # the second's DATA ends the group again
    settled = _feed(queue, b"250 first\r\n250 ok\r\n250 ok\r\n354 go\r\n")
    assert settled == [first] and second.stage is Stage.MESSAGE_SENT  # its 354 came too
    assert queue.data_to_send().data == BODY + b".\r\n"
    assert _feed(queue, b"250 second\r\n") == [second]
    assert second.outcome().reply.text == "second" and queue.messages_sent == 2


def test_bdat_transactions_pipelined_across_messages() -> None:
    queue = _queue()
    first, second = _attempt(extensions=CHUNKING), _attempt(("b@x.test",), CHUNKING)
    queue.enqueue(first)
    queue.enqueue(second)
    out = queue.data_to_send()
    head = b"MAIL FROM:<s@x.test> SIZE=21\r\n"
    assert out.message and out.data == (
        head
        + b"RCPT TO:<a@x.test>\r\nBDAT 21 LAST\r\n"
        + BODY
        + b"RSET\r\n"
        + head
        + b"RCPT TO:<b@x.test>\r\nBDAT 21 LAST\r\n"
        + BODY
    )
    assert first.data_started and second.data_started and second.reset
    settled = _feed(queue, b"250 ok\r\n250 ok\r\n250 2.0.0 first\r\n250 reset\r\n250 ok\r\n")
    assert settled == [first] and first.outcome().reply.text == "first"
    assert _feed(queue, b"550 5.1.1 gone\r\n554 no valid recipients\r\n") == [second]
    with pytest.raises(RecipientsRefused):
        second.outcome()
    assert not second.data_started  # every recipient refused: the data was never taken
    assert queue.needs_reset and queue.messages_sent == 1


def test_lock_step_without_pipelining() -> None:
    queue, attempt = _queue(pipelining=False), _attempt(("a@x.test", "b@x.test"))
    queue.enqueue(attempt)
    steps = [
        (b"", b"MAIL FROM:<s@x.test> SIZE=24\r\n"),
        (b"250 ok\r\n", b"RCPT TO:<a@x.test>\r\n"),
        (b"250 ok\r\n", b"RCPT TO:<b@x.test>\r\n"),
        (b"250 ok\r\n", b"DATA\r\n"),
        (b"354 go\r\n", BODY + b".\r\n"),
    ]
    for reply, expected in steps:
        if reply:
            assert _feed(queue, reply) == []
        assert queue.data_to_send().data == expected
    assert _feed(queue, b"250 done\r\n") == [attempt]
    assert attempt.outcome().accepted == ("a@x.test", "b@x.test")
    second = _attempt()
    queue.enqueue(second)
    queue.needs_reset = True
    assert queue.data_to_send().data == b"RSET\r\n"
    assert _feed(queue, b"550 no\r\n") == []  # a refused MAIL: no RCPT
    assert queue.data_to_send().data == b"MAIL FROM:<s@x.test> SIZE=24\r\n"


def test_refused_envelope_with_354_ends_the_data_empty() -> None:
    queue, attempt = _queue(), _attempt()
    queue.enqueue(attempt)
    queue.data_to_send()
    assert _feed(queue, b"250 ok\r\n550 no\r\n354 go\r\n") == [attempt]
    assert queue.owes_reply and not queue.settled
    assert queue.data_to_send().data == b".\r\n"
    assert _feed(queue, b"554 no valid recipients\r\n") == []
    assert queue.settled and not queue.owes_reply
    with pytest.raises(RecipientsRefused):
        attempt.outcome()


@pytest.mark.parametrize(
    ("replies", "error", "taken"),
    [
        (b"550 5.1.0 no\r\n", SenderRefused, False),
        (b"250 ok\r\n550 no\r\n", RecipientsRefused, False),
        (b"250 ok\r\n250 ok\r\n554 no\r\n", MessageRejected, False),
    ],
)
def test_refusals_settle_the_attempt(replies: bytes, error: type, taken: bool) -> None:
    queue, attempt = _queue(), _attempt()
    queue.enqueue(attempt)
    queue.data_to_send()
    settled = _feed(queue, replies + b"503 bad sequence\r\n" * (3 - replies.count(b"\n")))
    assert attempt in settled and attempt.data_started is taken
    with pytest.raises(error):
        attempt.outcome()


def test_421_means_never_taken_for_every_attempt() -> None:
    queue = _queue()
    attempts = [_attempt(extensions=CHUNKING) for _ in range(3)]
    for attempt in attempts:
        queue.enqueue(attempt)
    queue.data_to_send()
    queue.receive_data(b"421 4.7.0 too many messages\r\n")
    with pytest.raises(ConnectError) as info:
        queue.process()
    settled = queue.fail(info.value)
    assert settled == attempts
    assert not any(a.data_started for a in attempts)  # all may go again
    assert attempts[0].error is not None and attempts[0].error.reply is not None
    assert all(isinstance(a.error, ConnectError) for a in attempts)


def test_lost_after_the_message_is_outcome_unknown() -> None:
    queue, first, second = _queue(), _attempt(), _attempt()
    queue.enqueue(first)
    queue.data_to_send()
    _feed(queue, b"250 ok\r\n250 ok\r\n354 go\r\n")
    queue.data_to_send()
    queue.enqueue(second)
    assert queue.data_to_send().data.startswith(b"MAIL")  # written behind the message
    lost = _lost("lost")
    queue.fail(lost)
    assert isinstance(first.error, DeliveryOutcomeUnknown)
    assert isinstance(second.error, ConnectError) and not second.data_started
    assert "before this message was sent" in str(second.error)


def test_a_failed_write_sends_nothing_more() -> None:
    queue, first, second = _queue(), _attempt(), _attempt()
    queue.enqueue(first)
    queue.data_to_send()
    queue.write_failed(_lost("broken pipe"))
    queue.enqueue(second)
    assert queue.data_to_send().data == b"" and not queue.may_write
    assert _feed(queue, b"250 ok\r\n250 ok\r\n354 go\r\n") == [first]
    assert isinstance(first.error, ConnectError) and not first.data_started  # never sent
    queue.fail(_lost("broken pipe"))
    assert isinstance(second.error, ConnectError)


def test_unasked_replies_put_the_session_out_of_step() -> None:
    queue = _queue()
    queue.receive_data(b"250 surprise\r\n")
    queue.enqueue(_attempt())
    with pytest.raises(ConnectError) as info:
        queue.data_to_send()
    assert info.value.diagnosis.category is Category.CONNECTION_LOST


def _run_script(chunks: list[bytes], count: int) -> list[object]:
    """Outcomes of `count` pipelined BDAT attempts fed `chunks`, as comparable values."""
    queue = _queue()
    attempts = [_attempt(("a@x.test", "b@x.test"), CHUNKING) for _ in range(count)]
    for attempt in attempts:
        queue.enqueue(attempt)
    queue.data_to_send()
    events: list[object] = []
    try:
        for chunk in chunks:
            queue.receive_data(chunk)
            while settled := queue.process():  # until nothing more settles (or it raises)
                events.extend(attempts.index(a) for a in settled)
    except DeliveryError as exc:
        queue.fail(exc)
        events.append(type(exc).__name__)
    for attempt in attempts:
        error = attempt.error
        events.append(
            (
                attempt.stage.value,
                attempt.data_started,
                type(error).__name__,
                str(error),
                attempt.result,
            )
        )
    return events


_ENVELOPE_REPLY = st.sampled_from(
    [b"250 ok\r\n", b"550 5.1.1 no\r\n", b"451 later\r\n", b"421 bye\r\n", b"250-a\r\n250 b\r\n"]
)


@settings(max_examples=40, deadline=None)
@given(st.lists(_ENVELOPE_REPLY, min_size=1, max_size=13), st.data())
def test_transaction_outcomes_do_not_depend_on_how_replies_are_split(
    replies: list[bytes], data: st.DataObject
) -> None:
    raw = b"".join(replies)
    whole = _run_script([raw], 3)
    for cut in range(len(raw) + 1):
        assert _run_script([raw[:cut], raw[cut:]], 3) == whole
    cuts = sorted(data.draw(st.lists(st.integers(0, len(raw)), max_size=8)))
    chunks = [raw[a:b] for a, b in zip([0, *cuts], [*cuts, len(raw)], strict=True)]
    assert _run_script(chunks, 3) == whole


def test_a_failure_after_settled_attempts_is_raised_next() -> None:
    queue = _queue()
    first, second = _attempt(extensions=CHUNKING), _attempt(extensions=CHUNKING)
    queue.enqueue(first)
    queue.enqueue(second)
    queue.data_to_send()
    queue.receive_data(b"250 ok\r\n250 ok\r\n250 queued\r\n421 4.3.0 bye\r\n")
    assert queue.process() == [first]  # settled first: its thread may go on
    with pytest.raises(ConnectError):
        queue.handle_reply(SmtpReply(250))  # the 421 comes first, whichever way is used
    with pytest.raises(ConnectError) as info:
        queue.process()
    assert queue.fail(info.value) == [second] and not second.data_started
    assert queue.process() == []  # nothing pending after fail()
