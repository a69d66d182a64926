"""`RealDnsServer`: dnsmasq on loopback, serving test records, for integration tests.

FakeDnsServer is the everyday test double; this runs a real, independent DNS
implementation (Debian's `dnsmasq-base`) so that DNS-dependent code is also
proven against a server we did not write.
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from types import TracebackType

import dns.resolver

__all__ = ["RealDnsError", "RealDnsServer", "dnsmasq_availability"]

START_TIMEOUT = 5.0


class RealDnsError(RuntimeError):
    """dnsmasq could not be started or did not answer."""


def dnsmasq_availability() -> tuple[bool, str]:
    """(True, "") when dnsmasq is installed; else (False, the reason)."""
    if shutil.which("dnsmasq") or Path("/usr/sbin/dnsmasq").exists():
        return True, ""
    return False, "dnsmasq is not installed (Debian package dnsmasq-base)"


def _free_port() -> int:
    """A port free for both UDP and TCP on 127.0.0.1."""
    for _ in range(50):
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
            udp.bind(("127.0.0.1", 0))
            port: int = udp.getsockname()[1]
            with socket.socket() as tcp:
                try:
                    tcp.bind(("127.0.0.1", port))
                except OSError:
                    continue
                return port
    raise RealDnsError("no free port for both UDP and TCP")


class RealDnsServer:
    """dnsmasq answering for `domains` from the given lines of its configuration.

    `records` are dnsmasq options such as `txt-record=example.com,"v=spf1 -all"`,
    `host-record=mail.example.com,192.0.2.3`, `mx-host=example.com,mx.example.com,10`,
    `ptr-record=3.2.0.192.in-addr.arpa,mail.example.com`. Names under
    `domains` that have no record get NXDOMAIN.
    """

    def __init__(self, domains: Sequence[str], records: Sequence[str]) -> None:
        for line in records:
            if "\n" in line or "=" not in line:
                raise ValueError(f"not a dnsmasq option: {line!r}")
        self.domains = tuple(domains)
        self.records = tuple(records)
        self.port = 0
        self._directory: Path | None = None
        self._process: subprocess.Popen[bytes] | None = None

    def start(self) -> RealDnsServer:
        """Write the configuration, start dnsmasq in the foreground and wait until it answers."""
        self._directory = Path(tempfile.mkdtemp(prefix="mailbridge-dnsmasq-"))
        self.port = _free_port()
        config = self._directory / "dnsmasq.conf"
        config.write_text(
            "\n".join(
                [
                    f"port={self.port}",
                    "listen-address=127.0.0.1",
                    "bind-interfaces",
                    "no-resolv",
                    "no-hosts",
                    "no-poll",
                    *(f"local=/{domain}/" for domain in self.domains),
                    *self.records,
                    "",
                ]
            )
        )
        binary = shutil.which("dnsmasq") or "/usr/sbin/dnsmasq"
        self._process = subprocess.Popen(  # noqa: S603 (our own configuration)
            [
                binary,
                "--keep-in-foreground",
                f"--conf-file={config}",
                f"--pid-file={self._directory / 'dnsmasq.pid'}",
                f"--log-facility={self._directory / 'dnsmasq.log'}",
            ],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        deadline = time.monotonic() + START_TIMEOUT
        resolver = self.resolver(timeout=0.2)
        while time.monotonic() < deadline:
            if self._process.poll() is not None:
                error = self._process.stderr.read().decode() if self._process.stderr else ""
                self.stop()
                raise RealDnsError(f"dnsmasq exited: {error.strip()}")
            try:
                resolver.resolve(self.domains[0], "SOA", raise_on_no_answer=False)
                return self
            except dns.resolver.NXDOMAIN:
                return self
            except (dns.exception.Timeout, dns.resolver.NoNameservers):
                time.sleep(0.05)
        self.stop()
        raise RealDnsError(f"dnsmasq did not answer within {START_TIMEOUT} s")

    def resolver(self, timeout: float = 2.0) -> dns.resolver.Resolver:
        """A resolver that asks only this server."""
        resolver = dns.resolver.Resolver(configure=False)
        resolver.nameservers = ["127.0.0.1"]
        resolver.port = self.port
        resolver.timeout = resolver.lifetime = timeout
        return resolver

    def stop(self) -> None:
        """Stop dnsmasq and delete its directory; idempotent."""
        if self._process is not None:
            self._process.terminate()
            try:
                self._process.wait(START_TIMEOUT)
            except subprocess.TimeoutExpired:
                self._process.kill()
                self._process.wait(START_TIMEOUT)
            if self._process.stderr is not None:
                self._process.stderr.close()
            self._process = None
        if self._directory is not None:
            shutil.rmtree(self._directory, ignore_errors=True)
            self._directory = None

    def __enter__(self) -> RealDnsServer:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()
