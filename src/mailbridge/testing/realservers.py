"""Real Postfix + Dovecot on loopback, for integration tests and benchmarks.

Everything (configuration, queue, sockets, state, logs, certificates, maildirs) lives in one
directory.  Postfix accepts mail on three SMTP ports and hands mail for the local domains to
Dovecot over LMTP, so a test can read back exactly what arrived; Dovecot serves IMAP and does
SASL authentication for Postfix.  Mail for any other domain, including ``discard.test``, is
accepted and discarded: nothing ever leaves the machine.  Postfix needs root.

Mail is stored under a system user ``vmail`` (created when missing).  So that this user can reach
its maildirs, ``directory`` and its ancestors get the search bit for others (``o+x``, no read
permission) where it is missing, e.g. on pytest's ``/tmp/pytest-of-root`` (mode 0700).

Beside them: ``RealRedisServer`` (Debian's redis-server, e.g. Celery's broker; no root needed) and
``CeleryWorkers`` (real ``celery worker`` processes of an application module).
"""

from __future__ import annotations

import os
import pwd
import re
import shutil
import ssl
import stat
import subprocess
import tempfile
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from types import MappingProxyType

import trustme

from mailbridge.testing._celeryworkers import CeleryWorkers
from mailbridge.testing._realprocess import (
    RealServerError,
    StartStop,
    free_ports,
    read_tail,
    terminate_session,
    wait_until,
)
from mailbridge.testing._realredis import RealRedisServer, redis_availability

__all__ = [
    "DEFAULT_USERS",
    "CeleryWorkers",
    "RealMailServers",
    "RealRedisServer",
    "RealServerError",
    "availability",
    "redis_availability",
]

DEFAULT_USERS: Mapping[str, str] = MappingProxyType(
    {"alice@example.test": "alice-secret", "bob@example.test": "bob-secret"}
)
SPECIAL_USE_FOLDERS = ("Sent", "Drafts", "Trash", "Junk", "Archive")
_MAIL_USER = "vmail"
_SYSTEM_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
_DOVECOT_LIBEXEC = (Path("/usr/lib/dovecot"), Path("/usr/libexec/dovecot"))
_MAILDIR_NAME = re.compile(r"^(\d+)\.M(\d+)P")
# The Postfix daemons besides the SMTP listeners, none chrooted (master.cf format).
_POSTFIX_SERVICES = """\
pickup     unix      n - n 60    1 pickup
cleanup    unix      n - n -     0 cleanup
qmgr       unix      n - n 300   1 qmgr
tlsmgr     unix      - - n 1000? 1 tlsmgr
rewrite    unix      - - n -     - trivial-rewrite
bounce     unix      - - n -     0 bounce
defer      unix      - - n -     0 bounce
trace      unix      - - n -     0 bounce
verify     unix      - - n -     1 verify
flush      unix      n - n 1000? 0 flush
proxymap   unix      - - n -     - proxymap
proxywrite unix      - - n -     1 proxymap
smtp       unix      - - n -     - smtp
relay      unix      - - n -     - smtp
showq      unix      n - n -     - showq
error      unix      - - n -     - error
retry      unix      - - n -     - error
discard    unix      - - n -     - discard
lmtp       unix      - - n -     - lmtp
anvil      unix      - - n -     1 anvil
scache     unix      - - n -     1 scache
postlog    unix-dgram n - n -     1 postlogd
"""


def _which(name: str) -> str | None:
    return shutil.which(name, path=os.pathsep.join([os.environ.get("PATH", ""), _SYSTEM_PATH]))


def availability() -> tuple[bool, str]:
    """(True, "") when postfix and dovecot binaries exist and we are root; else (False, reason)."""
    missing = [name for name in ("postfix", "dovecot") if _which(name) is None]
    libexec = next((path for path in _DOVECOT_LIBEXEC if path.is_dir()), None)
    if libexec is not None:
        missing += [f"dovecot {name}" for name in ("imap", "lmtp") if not (libexec / name).exists()]
    if missing:
        return False, (
            f"mail servers not installed ({', '.join(missing)} missing); install the Debian "
            "packages postfix, dovecot-core, dovecot-imapd, dovecot-lmtpd"
        )
    if os.geteuid() != 0:
        return False, "running real Postfix needs root"
    return True, ""


def _mail_user() -> tuple[int, int]:
    """uid and gid of the mail user, created as a system user when missing."""
    for attempt in range(4):
        try:
            entry = pwd.getpwnam(_MAIL_USER)
        except KeyError:
            if attempt < 3:  # useradd fails while another process creates the user: retry
                time.sleep(0.1 * attempt)
                useradd = [_which("useradd") or "useradd", "--system", "--home-dir", "/nonexistent"]
                subprocess.run(  # noqa: S603 (fixed arguments)
                    [*useradd, "--user-group", "--shell", "/usr/sbin/nologin", _MAIL_USER],
                    capture_output=True,
                    timeout=30,
                    check=False,
                )
            continue
        return entry.pw_uid, entry.pw_gid
    raise RealServerError(f"could not create the system user {_MAIL_USER!r}")


def _make_traversable(path: Path) -> None:
    """Give others search permission on path and its ancestors (not read permission)."""
    for part in (path, *path.parents):
        mode = part.stat().st_mode
        if not mode & stat.S_IXOTH:
            part.chmod(stat.S_IMODE(mode) | stat.S_IXOTH)


class RealMailServers(StartStop):
    """A Postfix + Dovecot pair on 127.0.0.1, configured and kept entirely in ``directory``.

    Ports, chosen by the first start() and kept by later ones: ``submission_port`` (STARTTLS
    required, then AUTH), ``smtps_port`` (implicit TLS, AUTH), ``smtp_port`` (no AUTH, optional
    STARTTLS, open to 127.0.0.0/8), ``imap_port`` (STARTTLS) and ``imaps_port`` (implicit TLS).
    The server certificate (localhost, 127.0.0.1, ::1) is signed by the CA in ``ca_file``.
    """

    host = "127.0.0.1"
    discard_domain = "discard.test"

    def __init__(
        self,
        directory: Path,
        users: Mapping[str, str] = DEFAULT_USERS,
        *,
        domains: Sequence[str] = ("example.test",),
        message_size_limit: int = 10_485_760,
    ) -> None:
        self.directory = Path(directory).resolve()
        self.users: Mapping[str, str] = dict(users)
        self.domains = tuple(domains)
        self.message_size_limit = message_size_limit
        for address, password in self.users.items():
            if address.rpartition("@")[2] not in self.domains:
                raise ValueError(f"{address!r} is not in one of the domains {self.domains}")
            if re.search(r"[:\s,=]", address) or re.search(r"[:\n]", password):
                raise ValueError(f"unsupported character in user {address!r} or its password")
        self.submission_port = self.smtps_port = self.smtp_port = 0
        self.imap_port = self.imaps_port = self._lmtp_port = self._auth_port = 0
        certs = self.directory / "certs"
        self.ca_file = certs / "ca.pem"
        self._server_key, self._server_chain = certs / "server.key", certs / "server.pem"
        self._postfix_etc = self.directory / "postfix" / "etc"
        self._queue = self.directory / "postfix" / "queue"
        self._dovecot_conf = self.directory / "dovecot" / "dovecot.conf"
        self._base_dir = self.directory / "dovecot" / "run"
        self._logs = self.directory / "log"
        self._mail = self.directory / "mail"

    def start(self) -> None:
        """Write the configuration, stop leftovers in the directory, start Dovecot and Postfix."""
        available, reason = availability()
        if not available:
            raise RealServerError(reason)
        self.stop()
        try:
            self._prepare()
            self._run("dovecot", "-c", str(self._dovecot_conf))
            if not wait_until((self._base_dir / "master.pid").exists, 5.0):
                raise RealServerError("dovecot wrote no master.pid within 5 s")
            self._run("postfix", "-c", str(self._postfix_etc), "start")
        except (OSError, subprocess.SubprocessError, RealServerError) as exc:
            self.stop()
            raise RealServerError(
                f"mail servers failed to start: {exc}\n{self.log_tail()}"
            ) from exc

    def stop(self) -> None:
        """Stop Postfix and Dovecot of this directory; wait until all their processes are gone."""
        for pid_file in (self._queue / "pid" / "master.pid", self._base_dir / "master.pid"):
            try:
                pid = int(pid_file.read_text().split()[0])
            except (OSError, ValueError, IndexError):
                continue
            if self._owns(pid):
                terminate_session(pid)
            pid_file.unlink(missing_ok=True)

    def client_ssl_context(self) -> ssl.SSLContext:
        """A verifying client context that trusts ``ca_file``."""
        return ssl.create_default_context(cafile=str(self.ca_file))

    def wait_for_messages(self, address: str, count: int = 1, timeout: float = 10.0) -> list[bytes]:
        """The raw messages in the user's INBOX, in delivery order, once there are ``count``."""
        deadline = time.monotonic() + timeout
        while True:
            files = self._inbox_files(address)
            if len(files) >= count:
                try:
                    return [file.read_bytes() for file in files]
                except FileNotFoundError:  # an IMAP client moved it from new/ to cur/: list again
                    pass
            if time.monotonic() >= deadline:
                raise RealServerError(
                    f"{len(files)} of {count} message(s) for {address} arrived within "
                    f"{timeout} s\n{self.log_tail()}"
                )
            time.sleep(0.01)

    def clear_mailboxes(self) -> None:
        """Delete every delivered message from every folder of every user."""
        for maildir in self._mail.glob("*/*/Maildir"):
            for folder in (maildir, *maildir.glob(".*")):
                for subdir in ("new", "cur", "tmp"):
                    for message in folder.glob(f"{subdir}/*"):
                        message.unlink(missing_ok=True)

    def log_tail(self, lines: int = 50) -> str:
        """The last lines of the Postfix and Dovecot logs."""
        return "\n".join(
            f"--- {name} ---\n{read_tail(self._logs / name, lines)}"
            for name in ("postfix.log", "dovecot.log")
        )

    def _owns(self, pid: int) -> bool:
        """Whether pid runs in this directory (Postfix and Dovecot masters chdir into it)."""
        try:
            cwd = Path(os.readlink(f"/proc/{pid}/cwd"))
        except OSError:
            return False
        return cwd == self.directory or self.directory in cwd.parents

    def _inbox_files(self, address: str) -> list[Path]:
        local, _, domain = address.lower().rpartition("@")
        maildir = self._mail / domain / local / "Maildir"
        files = [*maildir.glob("new/*"), *maildir.glob("cur/*")]

        def delivery_order(path: Path) -> tuple[int, int, str]:
            match = _MAILDIR_NAME.match(path.name)
            return (int(match[1]), int(match[2]), path.name) if match else (0, 0, path.name)

        return sorted(files, key=delivery_order)

    def _run(self, command: str, *args: str) -> None:
        env = {**os.environ, "PATH": os.pathsep.join([os.environ.get("PATH", ""), _SYSTEM_PATH])}
        # A file, not a pipe: the daemons keep inherited descriptors open, and a pipe never ends.
        with tempfile.TemporaryFile() as output:
            result = subprocess.run(  # noqa: S603 (fixed programs, our own arguments)
                [_which(command) or command, *args],
                stdin=subprocess.DEVNULL,
                stdout=output,
                stderr=subprocess.STDOUT,
                timeout=30,
                env=env,
                check=False,
            )
            output.seek(0)
            text = output.read().decode("utf-8", "replace").strip()
        if result.returncode != 0:
            raise RealServerError(
                f"{command} {' '.join(args)} failed ({result.returncode}): {text}"
            )

    def _prepare(self) -> None:
        uid, gid = _mail_user()
        for path in (self.ca_file.parent, self._postfix_etc, self._queue, self._base_dir):
            path.mkdir(parents=True, exist_ok=True)
        for path in (self.directory / "dovecot" / "state", self._logs, self._mail):
            path.mkdir(parents=True, exist_ok=True)
        _make_traversable(self.directory)
        os.chown(self._mail, uid, gid)
        if not (self.ca_file.exists() and self._server_key.exists()):
            ca = trustme.CA()
            cert = ca.issue_cert("localhost", "127.0.0.1", "::1")
            cert.private_key_pem.write_to_path(str(self._server_key))
            self._server_key.chmod(0o600)
            self._server_chain.write_bytes(b"".join(pem.bytes() for pem in cert.cert_chain_pems))
            ca.cert_pem.write_to_path(str(self.ca_file))
        if not self.smtp_port:  # keep the ports of an earlier start(), so clients can reconnect
            ports = free_ports(7)
            self.smtp_port, self.submission_port, self.smtps_port = ports[:3]
            self.imap_port, self.imaps_port, self._lmtp_port, self._auth_port = ports[3:]
        users_file = self.directory / "dovecot" / "users"
        users_file.write_text(
            "".join(f"{a}:{{PLAIN}}{p}::::::\n" for a, p in self.users.items()), encoding="utf-8"
        )
        users_file.chmod(0o600)
        self._dovecot_conf.write_text(self._dovecot_config(uid, gid, users_file))
        (self._postfix_etc / "main.cf").write_text(self._postfix_main_cf())
        (self._postfix_etc / "master.cf").write_text(self._postfix_master_cf())
        # Postfix programs wait until a just-written main.cf is 2 s old ("cool down"): backdate it.
        an_hour_ago = time.time() - 3600
        os.utime(self._postfix_etc / "main.cf", (an_hour_ago, an_hour_ago))
        (self._base_dir / "anvil-auth-penalty").unlink(missing_ok=True)  # else start-up stalls 5 s

    def _dovecot_config(self, uid: int, gid: int, users_file: Path) -> str:
        mailboxes = "".join(
            f"  mailbox {name} {{\n    special_use = \\{name}\n    auto = subscribe\n  }}\n"
            for name in SPECIAL_USE_FOLDERS
        )
        return f"""\
protocols = imap lmtp
listen = 127.0.0.1
base_dir = {self._base_dir}
state_dir = {self.directory / "dovecot" / "state"}
log_path = {self._logs / "dovecot.log"}
ssl = yes
ssl_cert = <{self._server_chain}
ssl_key = <{self._server_key}
auth_mechanisms = plain login
auth_failure_delay = 0
auth_verbose = yes
login_trusted_networks = 127.0.0.0/8
first_valid_uid = {uid}
first_valid_gid = {gid}
mail_location = maildir:~/Maildir
mail_fsync = never
passdb {{
  driver = passwd-file
  args = scheme=PLAIN username_format=%u {users_file}
}}
userdb {{
  driver = static
  args = uid={uid} gid={gid} home={self._mail}/%d/%n
}}
namespace inbox {{
  inbox = yes
  separator = /
{mailboxes}}}
protocol imap {{
  mail_max_userip_connections = 1000
}}
service imap-login {{
  inet_listener imap {{
    port = {self.imap_port}
  }}
  inet_listener imaps {{
    port = {self.imaps_port}
    ssl = yes
  }}
}}
service lmtp {{
  inet_listener lmtp {{
    port = {self._lmtp_port}
  }}
}}
service auth {{
  user = root
  inet_listener sasl {{
    port = {self._auth_port}
  }}
}}
service anvil {{
  unix_listener anvil-auth-penalty {{
    mode = 0
  }}
}}
"""

    def _postfix_main_cf(self) -> str:
        mailboxes = ", ".join(f"{address}=ok" for address in self.users)
        return f"""\
compatibility_level = 3.6
queue_directory = {self._queue}
data_directory = {self.directory / "postfix" / "data"}
meta_directory = /etc/postfix
maillog_file = {self._logs / "postfix.log"}
maillog_file_prefixes = {self._logs}
myhostname = mail.{self.domains[0]}
mydomain = {self.domains[0]}
mydestination =
inet_interfaces = 127.0.0.1
inet_protocols = ipv4
mynetworks = 127.0.0.0/8
alias_maps =
local_header_rewrite_clients =
smtputf8_enable = yes
message_size_limit = {self.message_size_limit}
virtual_mailbox_domains = {", ".join(self.domains)}
virtual_mailbox_maps = inline:{{ {mailboxes} }}
virtual_transport = lmtp:inet:127.0.0.1:{self._lmtp_port}
relay_domains = {self.discard_domain}
transport_maps = inline:{{ {self.discard_domain}=discard: }}
default_transport = discard:
smtpd_tls_chain_files = {self._server_key}, {self._server_chain}
smtpd_tls_security_level = may
smtpd_tls_auth_only = yes
smtpd_sasl_type = dovecot
smtpd_sasl_path = inet:127.0.0.1:{self._auth_port}
smtpd_peername_lookup = no
smtpd_error_sleep_time = 0
smtpd_hard_error_limit = 1000
in_flow_delay = 0
queue_run_delay = 1s
minimal_backoff_time = 1s
maximal_backoff_time = 2s
delay_warning_time = 0
"""

    def _postfix_master_cf(self) -> str:
        authenticated = (
            "\n  -o smtpd_sasl_auth_enable=yes"
            "\n  -o smtpd_client_restrictions=permit_sasl_authenticated,reject"
            "\n  -o smtpd_relay_restrictions=permit_sasl_authenticated,reject"
        )
        return f"""\
127.0.0.1:{self.smtp_port} inet n - n - - smtpd
  -o syslog_name=postfix/smtp
127.0.0.1:{self.submission_port} inet n - n - - smtpd
  -o syslog_name=postfix/submission
  -o smtpd_tls_security_level=encrypt{authenticated}
127.0.0.1:{self.smtps_port} inet n - n - - smtpd
  -o syslog_name=postfix/smtps
  -o smtpd_tls_wrappermode=yes{authenticated}
{_POSTFIX_SERVICES}"""
