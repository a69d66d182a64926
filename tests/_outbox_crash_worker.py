"""A worker process for the outbox crash tests, killed with SIGKILL at a chosen point.

Run as `python _outbox_crash_worker.py config.json`. The kill points are test-only
hooks on this process's store (the library has no fault code): the Nth call of the
store method named by the point kills the process, as a crash or OOM kill would.
"""

from __future__ import annotations

import json
import os
import signal
import sys
from pathlib import Path
from typing import Any

from mailbridge import DeliveryClient, ImapSettings, SmtpSettings
from mailbridge.outbox import Backoff, Outbox
from mailbridge.smtp import wire


def main() -> None:
    config = json.loads(Path(sys.argv[1]).read_text())
    point, nth = config["point"], config["nth"]
    calls = [0]

    def due() -> bool:
        calls[0] += 1
        return calls[0] == nth

    def die() -> None:
        os.kill(os.getpid(), signal.SIGKILL)

    outbox = Outbox.open(config["url"])
    store: Any = outbox.store
    if point == "before_claim_commit":  # rows marked claimed, the transaction not committed
        take = store._take

        def hooked_take(*args: Any, **kwargs: Any) -> Any:
            taken = take(*args, **kwargs)
            if taken and due():
                die()
            return taken

        store._take = hooked_take
    elif point == "mid_data":  # half of the message's DATA written to the server
        write = wire.Channel.write

        def hooked_write(channel: Any, data: bytes, timeout: float) -> None:
            if data.endswith(b"\r\n.\r\n") and due():
                channel.sock.sendall(data[: len(data) // 2])
                die()
            write(channel, data, timeout)

        wire.Channel.write = hooked_write  # type: ignore[method-assign]
    else:
        exchange = store.exchange  # a worker records outcomes and claims in one transaction

        def hooked_exchange(outcomes: Any, *args: Any, **kwargs: Any) -> Any:
            states = {outcome.state for outcome in outcomes}
            if point == "after_250_before_commit" and "sent" in states and due():
                die()  # the server said 250, the row still says claimed
            held, claimed = exchange(outcomes, *args, **kwargs)
            if point == "after_claim" and claimed and due():
                die()  # committed claims, nothing sent yet
            if point == "pause_after_claim" and claimed and due():
                os.kill(os.getpid(), signal.SIGSTOP)  # paused until the test's SIGCONT
            if point == "during_backoff" and "queued" in states and due():
                die()  # a message was put back to wait for its next attempt
            return held, claimed

        store.exchange = hooked_exchange
    # "during_data": the test's SMTP server kills this process while it receives DATA.
    settings = SmtpSettings(**config["smtp"])
    imap = ImapSettings(**config["imap"]) if config.get("imap") else None

    def resolve(tenant: str) -> DeliveryClient:
        if imap is None:
            return DeliveryClient.own_smtp(config["sender"], settings)
        # A provider that files every accepted message in Sent itself (as Gmail does).
        return DeliveryClient.own_smtp(config["sender"], settings, imap=imap, archive_sent=False)

    worker = outbox.worker(
        resolve,
        concurrency=config["concurrency"],
        lease=config["lease"],
        backoff=Backoff(first=0.2, factor=1.5, maximum=0.5, jitter=0.2),
    )
    print("ready", flush=True)
    stats = worker.run(until_idle=True, linger=config["linger"])
    print(json.dumps(attrs_dict(stats)), flush=True)


def attrs_dict(stats: Any) -> dict[str, int]:
    return {name: getattr(stats, name) for name in ("sent", "failed", "retried", "unknown")}


if __name__ == "__main__":
    main()
