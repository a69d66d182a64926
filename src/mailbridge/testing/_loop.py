"""The background event loop that every fake server runs in."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable

__all__ = ["STOP_TIMEOUT", "start_loop_thread", "stop_loop_thread"]

STOP_TIMEOUT = 5.0


def start_loop_thread(name: str) -> tuple[asyncio.AbstractEventLoop, threading.Thread]:
    """A new event loop running forever in a daemon thread called `name`."""
    loop = asyncio.new_event_loop()
    ready = threading.Event()

    def run() -> None:
        asyncio.set_event_loop(loop)
        ready.set()
        loop.run_forever()

    thread = threading.Thread(target=run, name=name, daemon=True)
    thread.start()
    ready.wait(STOP_TIMEOUT)
    return loop, thread


def stop_loop_thread(
    loop: asyncio.AbstractEventLoop, thread: threading.Thread, close: Callable[[], None]
) -> None:
    """Run `close` in the loop (close listeners and connections), cancel every task, end it all."""

    async def shutdown() -> None:
        close()
        current = asyncio.current_task()
        tasks = [task for task in asyncio.all_tasks() if task is not current]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await asyncio.sleep(0)  # let the transports' close callbacks run

    asyncio.run_coroutine_threadsafe(shutdown(), loop).result(STOP_TIMEOUT)
    loop.call_soon_threadsafe(loop.stop)
    thread.join(STOP_TIMEOUT)
    if not thread.is_alive():
        loop.close()
