"""Cancelling an async send: nothing half-sent before the data went out, "outcome unknown" after.

Each test stalls a scripted server at a chosen point, cancels the send there
and counts at the server what arrived.
"""

from __future__ import annotations

import asyncio
import threading

import pytest

from mailbridge import DeliveryOutcomeUnknown, PreparedMessage
from mailbridge.smtp import AsyncConnectionPool, AsyncSmtpTransport

from ._async_scripted import ScriptedSmtp


def _message(n: int) -> PreparedMessage:
    data = f"Subject: m{n}\r\nMessage-ID: <{n}@example.test>\r\n\r\nbody {n}\r\n"
    return PreparedMessage(
        data=data.encode(),
        envelope_sender="billing@example.test",
        recipients=(f"r{n}@example.test",),
        message_id=f"<{n}@example.test>",
    )


async def _settle() -> None:
    for _ in range(20):  # let the loop run the callbacks of a cancellation
        await asyncio.sleep(0)


def test_cancelled_while_queued_is_withdrawn_and_the_connection_stays_in_use() -> None:
    async def scenario() -> None:
        async with ScriptedSmtp() as server:
            pool = AsyncConnectionPool(max_per_server=1, messages_in_flight=3)
            transport = AsyncSmtpTransport(server.settings(), pool=pool)
            release = server.hold_354()
            first = asyncio.create_task(transport.deliver(_message(1)))
            await asyncio.wait_for(server.reached_354.wait(), 5)
            # DATA waits for its 354: the next message is queued, not written.
            second = asyncio.create_task(transport.deliver(_message(2)))
            await _settle()
            second.cancel()
            with pytest.raises(asyncio.CancelledError) as info:
                await second
            assert info.value.__cause__ is None  # never written: nothing to wonder about
            release.set()
            assert (await first).accepted == ("r1@example.test",)
            third = await transport.deliver(_message(3))
            assert third.accepted == ("r3@example.test",)
            await transport.aclose()
            assert server.messages == ["m1", "m3"]
            assert server.envelopes == 2
            assert server.connections == 1  # the same connection carried on

    asyncio.run(scenario())


@pytest.mark.parametrize("pipelining", [True, False], ids=["pipelined", "lockstep"])
def test_cancelled_with_only_its_envelope_out_ends_the_connection_unsent(
    pipelining: bool,
) -> None:
    async def scenario() -> None:
        async with ScriptedSmtp(pipelining=pipelining) as server:
            transport = AsyncSmtpTransport(server.settings())
            release = server.hold_354()
            send = asyncio.create_task(transport.deliver(_message(1)))
            await asyncio.wait_for(server.reached_354.wait(), 5)
            send.cancel()
            with pytest.raises(asyncio.CancelledError) as info:
                await send
            assert info.value.__cause__ is None
            release.set()  # the server says 354 now: nobody is left to send the message
            for _ in range(100):  # the server notices the connection end
                if server.closed_mid_transaction:
                    break
                await asyncio.sleep(0.01)
            assert server.closed_mid_transaction == 1
            assert server.messages == []  # the message never followed its envelope
            assert (await transport.deliver(_message(2))).accepted == ("r2@example.test",)
            await transport.aclose()
            assert server.messages == ["m2"]
            assert server.connections == 2

    asyncio.run(scenario())


def test_messages_behind_a_cancelled_envelope_go_again_on_a_new_connection() -> None:
    async def scenario() -> None:
        async with ScriptedSmtp() as server:
            pool = AsyncConnectionPool(max_per_server=1, messages_in_flight=3)
            transport = AsyncSmtpTransport(server.settings(), pool=pool)
            release = server.hold_354()
            doomed = asyncio.create_task(transport.deliver(_message(1)))
            await asyncio.wait_for(server.reached_354.wait(), 5)
            behind = [asyncio.create_task(transport.deliver(_message(n))) for n in (2, 3)]
            await _settle()
            doomed.cancel()
            await asyncio.gather(doomed, return_exceptions=True)
            release.set()
            results = await asyncio.gather(*behind)
            await transport.aclose()
            assert [r.accepted for r in results] == [("r2@example.test",), ("r3@example.test",)]
            assert sorted(server.messages) == ["m2", "m3"]  # m1 never, the others once
            assert server.connections == 2

    asyncio.run(scenario())


@pytest.mark.parametrize("chunking", [False, True], ids=["data", "bdat"])
def test_cancelled_after_the_data_went_out_is_outcome_unknown(chunking: bool) -> None:
    async def scenario() -> None:
        async with ScriptedSmtp(chunking=chunking) as server:
            transport = AsyncSmtpTransport(server.settings())
            release = server.hold_final()
            send = asyncio.create_task(transport.deliver(_message(1)))
            await asyncio.wait_for(server.reached_final.wait(), 5)
            send.cancel()
            with pytest.raises(asyncio.CancelledError) as info:
                await send
            assert isinstance(info.value.__cause__, DeliveryOutcomeUnknown)
            assert server.messages == ["m1"]  # it did arrive: never reported as not sent
            release.set()  # its late 250 must never be taken for the next message's reply
            assert (await transport.deliver(_message(2))).accepted == ("r2@example.test",)
            assert server.messages == ["m1", "m2"]
            await transport.aclose()

    asyncio.run(scenario())


def test_a_cancelled_message_on_a_shared_connection_keeps_the_replies_in_step() -> None:
    async def scenario() -> None:
        async with ScriptedSmtp(chunking=True) as server:
            pool = AsyncConnectionPool(max_per_server=1, messages_in_flight=3)
            transport = AsyncSmtpTransport(server.settings(), pool=pool)
            release = server.hold_final()
            first = asyncio.create_task(transport.deliver(_message(1)))
            await asyncio.wait_for(server.reached_final.wait(), 5)
            second = asyncio.create_task(transport.deliver(_message(2)))  # BDAT: written ahead
            await _settle()
            first.cancel()
            with pytest.raises(asyncio.CancelledError) as info:
                await first
            assert isinstance(info.value.__cause__, DeliveryOutcomeUnknown)
            release.set()
            result = await second  # gets its own 250, not the first message's
            assert result.accepted == ("r2@example.test",)
            await transport.aclose()
            assert server.messages == ["m1", "m2"]
            assert server.connections == 1

    asyncio.run(scenario())


def test_asyncio_timeout_around_a_send_keeps_the_outcome_unknown() -> None:
    async def scenario() -> None:
        async with ScriptedSmtp() as server:
            transport = AsyncSmtpTransport(server.settings())
            server.hold_final()
            with pytest.raises(TimeoutError) as info:
                async with asyncio.timeout(2.0):
                    await transport.deliver(_message(1))
            # asyncio.timeout chains it as the cause (3.11.2, Debian's: only the context)
            cancelled = info.value.__cause__ or info.value.__context__
            assert isinstance(cancelled, asyncio.CancelledError)
            assert isinstance(cancelled.__cause__, DeliveryOutcomeUnknown)
            assert server.messages == ["m1"]
            await transport.aclose()

    asyncio.run(scenario())


def test_a_stalled_final_reply_times_out_as_outcome_unknown_without_a_thread() -> None:
    async def scenario() -> None:
        async with ScriptedSmtp() as server:
            transport = AsyncSmtpTransport(server.settings(data_timeout=0.3))
            server.hold_final()
            threads = threading.active_count()
            started = asyncio.get_running_loop().time()
            with pytest.raises(DeliveryOutcomeUnknown):
                await transport.deliver(_message(1))
            assert asyncio.get_running_loop().time() - started < 2
            assert threading.active_count() == threads
            assert server.messages == ["m1"]  # and it was not sent again
            await transport.aclose()

    asyncio.run(scenario())
