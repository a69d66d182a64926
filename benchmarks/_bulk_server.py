"""A child process that runs a FakeSmtpServer and DelayProxies for `bulk.py`.

Servers and proxies live in their own process so that they do not compete with
the measured client for the GIL; with `separate_proxies=True` the proxies get a
process of their own too, so that they do not compete with the server either
(a real network does not slow down the server it carries traffic to). The parent
talks to the child over a pipe; every call has a time limit, and `stop()` ends the
child (terminate, then kill).
"""

from __future__ import annotations

import contextlib
import logging
import multiprocessing
import sys
from pathlib import Path
from typing import Any

CALL_TIMEOUT = 60.0
START_TIMEOUT = 30.0


def _normalized(data: bytes) -> bytes:
    return data.replace(b"\r\n", b"\n").rstrip(b"\n")


def _serve(conn: Any, spec: dict[str, Any]) -> None:  # runs in the child
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from delayproxy import DelayProxy

    from mailbridge.testing import FakeSmtpServer

    logging.getLogger("mail.log").setLevel(logging.ERROR)
    server = None
    proxies: list[DelayProxy] = []
    try:
        info: dict[str, Any] = {}
        if spec.get("fake"):
            server = FakeSmtpServer(
                tls=spec["tls"], users=spec.get("users"), chunking=spec["chunking"]
            ).start()
            info = {
                "host": server.host,
                "port": server.port,
                "ca_file": str(server.ca_file),
                "pipelining": bool(server.pipelining),
            }
        conn.send(info)
        while True:
            if not conn.poll(3600):
                break
            command, *args = conn.recv()
            if command == "stop":
                break
            if command == "proxy":
                host, port, delay = args
                proxy = DelayProxy(host, port, delay).start()
                proxies.append(proxy)
                conn.send(proxy.port)
            elif command == "reset":
                for proxy in proxies:
                    proxy.stats.reset()
                conn.send(None)
            elif command == "turns":
                conn.send(sum(proxy.stats.turns for proxy in proxies))
            elif command == "count":
                conn.send(len(server.messages) if server else 0)
            elif command == "check":  # (start, data, recipients) -> (received, intact)
                start, data, recipients = args
                want, rcpts = _normalized(data) if data else None, sorted(recipients)
                received = server.messages[start:] if server else []
                intact = sum(
                    1
                    for got in received
                    if (want is None or _normalized(got.data) == want)
                    and sorted(got.rcpt_tos) == rcpts
                )
                conn.send((len(received), intact))
            else:
                conn.send(RuntimeError(f"unknown command {command!r}"))
    finally:
        for proxy in proxies:
            proxy.stop()
        if server is not None:
            server.stop()
        with contextlib.suppress(OSError):
            conn.send("stopped")


class ServerProcess:
    """Parent side: `ServerProcess(fake=True, tls="none", chunking=False).start()`."""

    _PROXY_COMMANDS = frozenset({"proxy", "reset", "turns"})

    def __init__(self, *, separate_proxies: bool = False, **spec: Any) -> None:
        self.spec = spec
        self._proxies = ServerProcess(fake=False) if separate_proxies else None
        self.info: dict[str, Any] = {}
        self._context = multiprocessing.get_context("spawn")
        self._conn: Any = None
        self._process: Any = None

    def start(self) -> ServerProcess:
        parent, child = self._context.Pipe()
        self._process = self._context.Process(target=_serve, args=(child, self.spec), daemon=True)
        self._process.start()
        child.close()
        self._conn = parent
        if not parent.poll(START_TIMEOUT):
            self.stop()
            raise RuntimeError("the server process did not start in time")
        self.info = parent.recv()
        if self._proxies is not None:
            try:
                self._proxies.start()
            except BaseException:
                self.stop()
                raise
        return self

    def call(self, *command: Any) -> Any:
        if self._proxies is not None and command[0] in self._PROXY_COMMANDS:
            return self._proxies.call(*command)
        self._conn.send(command)
        if not self._conn.poll(CALL_TIMEOUT):
            raise RuntimeError(f"the server process did not answer {command[0]!r} in time")
        answer = self._conn.recv()
        if isinstance(answer, Exception):
            raise answer
        return answer

    def proxy(self, host: str, port: int, delay: float) -> int:
        """Start a DelayProxy in the child to host:port; returns its port on 127.0.0.1."""
        return int(self.call("proxy", host, port, delay))

    def stop(self) -> None:
        if self._proxies is not None:
            self._proxies.stop()
        process, conn = self._process, self._conn
        if process is None:
            return
        with contextlib.suppress(OSError, EOFError, BrokenPipeError):
            conn.send(("stop",))
            if conn.poll(15):
                conn.recv()
        process.join(10)
        if process.is_alive():
            process.terminate()
            process.join(5)
        if process.is_alive():
            process.kill()
            process.join(5)
        with contextlib.suppress(OSError):
            conn.close()
        self._process = self._conn = None

    def __enter__(self) -> ServerProcess:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()
