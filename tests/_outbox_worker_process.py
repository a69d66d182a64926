"""An outbox worker process for the multi-process and crash tests (run as a script).

    python tests/_outbox_worker_process.py '{"url": ..., "host": ..., "port": ..., ...}'

It drains the outbox at `url` through the SMTP server at host:port until nothing is due
(`"until_idle": false`: until SIGTERM), then prints its `WorkerStats` as JSON. With
`"kill": {"point": P, "after": N}` it SIGKILLs itself the N-th time it reaches point P.
The kill points are test-only hooks wrapped around the library from here (the library has
no fault code):

* `claim_commit`: inside a claim's transaction, after its rows are updated, before COMMIT;
* `after_claim`: a claim committed, nothing sent yet;
* `during_data`: half of the message's DATA (the part ending in CRLF.CRLF) written;
* `after_250`: the server answered 250, the outcome not yet recorded;
* `backoff`: a temporary failure recorded, the message waiting to be tried again.

With `"go_file"`, the process opens the outbox, writes `<go_file>.<index>.ready` and waits
(at most 60 s) for `go_file` to exist, so that several workers start draining together.
"""

from __future__ import annotations

import functools
import json
import os
import signal
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import attrs

from mailbridge import DeliveryClient, SmtpSettings
from mailbridge.outbox import Backoff, Outbox, SqlStore, State
from mailbridge.smtp import wire

POINTS = ("claim_commit", "after_claim", "during_data", "after_250", "backoff")
GO_WAIT = 60.0


class _Killer:
    """Counts visits to the chosen point and SIGKILLs this process at the N-th."""

    def __init__(self, after: int) -> None:
        self.after = after
        self.visits = 0
        self.lock = threading.Lock()

    def visit(self, before_death: Callable[[], object] | None = None) -> None:
        with self.lock:
            self.visits += 1
            if self.visits < self.after:
                return
            if before_death is not None:
                before_death()
            os.kill(os.getpid(), signal.SIGKILL)
            time.sleep(10)  # SIGKILL is delivered at once; never go on


def _after(original: Callable[..., Any], hook: Callable[[Any, tuple[Any, ...]], None]) -> Any:
    @functools.wraps(original)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        result = original(*args, **kwargs)
        hook(result, args)
        return result

    return wrapper


def install_kill_point(point: str, after: int) -> None:
    """Wrap the library where `point` is, so that the `after`-th visit kills the process."""
    killer = _Killer(after)
    if point == "claim_commit":
        SqlStore._take = _after(  # type: ignore[method-assign]
            SqlStore._take, lambda taken, _: killer.visit() if taken else None
        )
    elif point == "after_claim":
        SqlStore.claim = _after(  # type: ignore[method-assign]
            SqlStore.claim, lambda claimed, _: killer.visit() if claimed else None
        )
    elif point == "backoff":
        SqlStore.reschedule = _after(  # type: ignore[method-assign]
            SqlStore.reschedule, lambda done, _: killer.visit() if done else None
        )
    elif point == "after_250":
        finish = SqlStore.finish

        def finish_or_die(self: SqlStore, id: str, owner: str, state: State, **kw: Any) -> bool:
            if state is State.SENT:
                killer.visit()
            return finish(self, id, owner, state, **kw)

        SqlStore.finish = finish_or_die  # type: ignore[method-assign]
    elif point == "during_data":
        write = wire.Channel.write

        def write_or_die(self: wire.Channel, data: bytes, timeout: float) -> None:
            if data.endswith(b"\r\n.\r\n"):
                killer.visit(lambda: self.sock.sendall(data[: len(data) // 2]))
            write(self, data, timeout)

        wire.Channel.write = write_or_die  # type: ignore[method-assign]
    else:
        raise SystemExit(f"unknown kill point {point!r}")


def _wait_for_go(go_file: Path, index: int) -> None:
    Path(f"{go_file}.{index}.ready").touch()
    deadline = time.monotonic() + GO_WAIT
    while not go_file.exists():
        if time.monotonic() > deadline:
            raise SystemExit("no go within 60 s")
        time.sleep(0.01)


def main(spec: dict[str, Any]) -> None:
    kill = spec.get("kill")
    if kill:
        install_kill_point(kill["point"], int(kill["after"]))
    settings = SmtpSettings(spec["host"], int(spec["port"]), "none", command_timeout=10.0)

    def resolve(tenant: str) -> DeliveryClient:
        return DeliveryClient.own_smtp(spec.get("sender", "billing@acme.example"), settings)

    backoff = Backoff(first=0.2, factor=1.0, maximum=0.2, jitter=0.0)
    with Outbox.open(spec["url"], resolve_client=resolve) as outbox:
        worker = outbox.worker(
            concurrency=int(spec.get("concurrency", 4)),
            lease=float(spec.get("lease", 2.0)),
            backoff=backoff,
        )
        if spec.get("go_file"):
            _wait_for_go(Path(spec["go_file"]), int(spec.get("index", 0)))
        until_idle = spec.get("until_idle", True)  # False: until SIGTERM
        stats = worker.run(until_idle=until_idle, linger=float(spec.get("linger", 3.0)))
    print(json.dumps(attrs.asdict(stats)), flush=True)


if __name__ == "__main__":
    main(json.loads(sys.argv[1]))
