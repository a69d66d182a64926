"""The `mailbridge` command: demo, test-connection, send, spf, dmarc, discover, setup,
blacklist, oauth, outbox.

Exit codes: 0 success, 1 delivery or connection failed (blacklist: listed), 2 bad
usage or settings, 3 sent but some recipients were refused, 4 blacklists that
could not be checked, 70 internal error (a bug:
`--debug` or MAILBRIDGE_DEBUG=1 shows its traceback), 130 interrupted.
No other error shows a traceback.
"""

from __future__ import annotations

import argparse
import getpass
import os
import sys
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

# Only what parsing the arguments needs: each command imports its libraries (dnspython,
# imapclient, the SMTP client, ...) when it runs, so `mailbridge --help` stays fast.
from . import _cli_args as _args
from . import _cli_blacklist, _cli_oauth
from ._cli_outbox import add_outbox_commands
from .errors import ConfigurationError, DeliveryError, MailbridgeError, MessageError

if TYPE_CHECKING:
    import dns.resolver

    from .settings import SmtpSettings

__all__ = ["main"]

EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_PARTIAL = 0, 1, 2, 3
EXIT_INTERNAL, EXIT_INTERRUPTED = 70, 130  # sysexits.h EX_SOFTWARE; 128 + SIGINT
DEFAULT_PASSWORD_ENV = "MAILBRIDGE_PASSWORD"  # noqa: S105 (the name of a variable)
DEBUG_ENV = "MAILBRIDGE_DEBUG"


def _add_server_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--host", required=True, help="SMTP server name")
    parser.add_argument("--port", type=_args.port, required=True, help="587, 465, 25, ...")
    parser.add_argument(
        "--security",
        default="starttls",
        help="starttls (default), implicit_tls (also: ssl) or none",
    )
    parser.add_argument("--user", help="user name, usually the full email address")
    parser.add_argument(
        "--password-env",
        default=DEFAULT_PASSWORD_ENV,
        metavar="VAR",
        help=f"environment variable holding the password (default {DEFAULT_PASSWORD_ENV}); "
        "without it you are asked. Passwords are never taken as arguments.",
    )
    parser.add_argument("--ca-file", help="PEM file of a private certificate authority")
    parser.add_argument("--timeout", type=_args.seconds, default=10.0, help="seconds per step")


def _settings(args: argparse.Namespace) -> SmtpSettings:
    from .settings import SmtpSettings

    password = None
    if args.user:
        password = os.environ.get(args.password_env)
        if password is None:
            if not sys.stdin.isatty():
                raise ConfigurationError(
                    "password", f"set {args.password_env} or run in a terminal to be asked"
                )
            password = getpass.getpass(f"Password for {args.user}: ")
    return SmtpSettings(
        args.host,
        args.port,
        args.security,
        username=args.user,
        password=password,
        ca_file=args.ca_file,
        connect_timeout=args.timeout,
        command_timeout=args.timeout,
    )


def _cmd_demo(args: argparse.Namespace) -> int:
    from ._demo import run_demo

    return run_demo()


def _show_progress(args: argparse.Namespace) -> bool:
    """Progress goes to stderr when it is a terminal, or with --progress."""
    return bool(args.progress) or sys.stderr.isatty()


def _cmd_test_connection(args: argparse.Namespace) -> int:
    import attrs

    from ._results import Step
    from ._transport_choice import blacklist_targets, run_blacklist_check
    from .smtp import probe_smtp

    settings = _settings(args)
    check = _cli_blacklist.connection_blacklist_check(args, _resolver)

    def show(step: Step) -> None:
        mark = "ok  " if step.ok else "FAIL"
        print(f"{mark} {step.name} ({step.seconds * 1000:.0f} ms)", file=sys.stderr, flush=True)

    if _show_progress(args):
        print(f"testing {settings.host}:{settings.port} ...", file=sys.stderr, flush=True)
    report = probe_smtp(settings, observer=show if _show_progress(args) else None)
    if check is not None:  # the SMTP host, as DeliveryClient.test_connection(blacklists=...)
        targets = blacklist_targets(settings)
        report = attrs.evolve(report, blacklists=run_blacklist_check(check, targets))
    print(report)
    if report.alternative is not None:
        print(f"Working setting: --security {report.alternative.security.value}")
    return _cli_blacklist.connection_exit_code(report)


def _read_body(path: str) -> str:
    try:
        with open(path, encoding="utf-8") as handle:
            return handle.read()
    except OSError as exc:
        raise ConfigurationError("body_file", f"cannot read {path}: {exc.strerror}") from None
    except UnicodeDecodeError:
        raise ConfigurationError("body_file", f"{path} is not UTF-8 text") from None


def _cmd_send(args: argparse.Namespace) -> int:
    from . import Attachment, DeliveryClient, DocumentEmail

    settings = _settings(args)
    body = _read_body(args.body_file) if args.body_file else args.body
    email = DocumentEmail(
        to=args.to,
        cc=args.cc or (),
        bcc=args.bcc or (),
        subject=args.subject,
        body=body or "",
        reply_to=args.reply_to,
        attachments=[Attachment.from_path(path) for path in args.attach or ()],
    )
    with DeliveryClient.own_smtp(args.sender, settings, display_name=args.name) as client:
        result = client.send(email)
    print(f"Message-ID: {result.message_id}")
    for address in result.accepted:
        print(f"accepted  {address}")
    for address, reply in result.refused.items():
        print(f"refused   {address}: {reply}")
    return EXIT_OK if result.ok else EXIT_PARTIAL


def _resolver(args: argparse.Namespace) -> dns.resolver.Resolver:
    import dns.resolver

    if not args.nameserver:
        return dns.resolver.Resolver()
    resolver = dns.resolver.Resolver(configure=False)
    resolver.nameservers = [args.nameserver]
    resolver.port = args.dns_port
    resolver.timeout = resolver.lifetime = args.dns_timeout
    return resolver


def _cmd_spf_check(args: argparse.Namespace) -> int:
    from .dnsauth import SpfVerdict, check_host

    result = check_host(args.ip, args.domain, args.sender or args.domain, resolver=_resolver(args))
    print(f"{result.result}: {result.reason}")
    if result.record:
        print(f"record:      {result.record}")
    if result.explanation:
        print(f"explanation: {result.explanation}")
    print(f"lookups:     {result.lookups}")
    return EXIT_OK if result.result == SpfVerdict.PASS else EXIT_FAILED


def _cmd_spf_plan(args: argparse.Namespace) -> int:
    from .dnsauth import SpfPlanStatus, plan_include

    plan = plan_include(args.domain, args.include, resolver=_resolver(args))
    if plan.current_record:
        print(f"current: {plan.current_record}")
    if plan.new_record:
        print(f"publish: {plan.new_record}")
    print(plan.instructions)
    ok = (SpfPlanStatus.NOTHING_TO_DO, SpfPlanStatus.CREATE, SpfPlanStatus.UPDATE)
    return EXIT_OK if plan.status in ok else EXIT_FAILED


def _cmd_dmarc(args: argparse.Namespace) -> int:
    from .dnsauth._dmarc import lookup_dmarc

    policy = lookup_dmarc(args.domain, resolver=_resolver(args))
    if policy is None:
        print(f"{args.domain} publishes no DMARC policy")
        return EXIT_OK
    print(
        f"policy {policy.policy} (from _dmarc.{policy.domain}), pct={policy.pct}, "
        f"aspf={policy.aspf}, adkim={policy.adkim}"
    )
    print(f"record: {policy.record}")
    return EXIT_OK


def _discovery_progress(event: Any) -> None:
    finished = event.finished
    if finished is None:
        line = f"  waiting for {', '.join(event.pending)} ({event.elapsed:.0f} s)"
    elif finished.timed_out:
        line = f"  {finished.name}: no answer in time ({finished.seconds:.1f} s)"
    elif finished.error:
        line = f"  {finished.name}: {finished.error}"
    else:
        line = f"  {finished.name}: {finished.found} found ({finished.seconds:.1f} s)"
    print(line, file=sys.stderr, flush=True)


def _cmd_discover(args: argparse.Namespace) -> int:
    from .providers import discover

    resolver = _resolver(args) if args.nameserver else None
    progress = _discovery_progress if _show_progress(args) else None
    if progress is not None:
        print(f"discovering settings for {args.email} ...", file=sys.stderr, flush=True)
    result = discover(
        args.email,
        resolver=resolver,
        timeout=args.timeout,
        guess=not args.no_guess,
        progress=progress,
    )
    if args.json:
        import json

        from ._cli_discovery import discovery_json

        print(json.dumps(discovery_json(result), indent=2))
    else:
        print(result)
    return EXIT_OK if result.smtp else EXIT_FAILED


def _cmd_setup(args: argparse.Namespace) -> int:
    from .providers import setup

    resolver = _resolver(args) if args.nameserver else None
    if args.oauth:
        return _cli_oauth.setup_command(args, resolver)
    password = os.environ.get(args.password_env)
    if password is None:
        if not sys.stdin.isatty():
            raise ConfigurationError(
                "password", f"set {args.password_env} or run in a terminal to be asked"
            )
        password = getpass.getpass(f"Password for {args.email}: ")
    result = setup(
        args.email,
        password,
        resolver=resolver,
        timeout=args.timeout,
        want_imap=not args.no_imap,
        **_cli_oauth.proof_options(args),
    )
    print(result)
    if result.smtp is not None:
        s = result.smtp
        print(f"SMTP: --host {s.host} --port {s.port} --security {s.security.value}")
    if result.imap is not None:
        print(f"IMAP: {result.imap.host}:{result.imap.port} {result.imap.security.value}")
    if not result.ok and (offer := _cli_oauth.offer(args.email, result.oauth2)):
        print(offer)
    return EXIT_OK if result.ok else EXIT_FAILED


def _cmd_providers(args: argparse.Namespace) -> int:
    from .providers import ProviderRegistry

    registry = ProviderRegistry.default()
    providers = list(registry)
    if args.domain:
        found = registry.by_domain(args.domain)
        if found is None:
            print(f"no provider preset for {args.domain}")
            return EXIT_FAILED
        providers = [found]
    for provider in providers:
        smtp = ", ".join(f"{e.host}:{e.port} {e.security.value}" for e in provider.smtp)
        print(f"{provider.id:<18} {provider.name:<32} {smtp}")
    return EXIT_OK


def _add_dns_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--nameserver",
        type=_args.ip_address,
        help="ask the DNS server at this IP address instead of the system's",
    )
    parser.add_argument("--dns-port", type=_args.port, default=53)
    parser.add_argument("--dns-timeout", type=_args.seconds, default=5.0)


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of the `mailbridge` command."""
    parser = argparse.ArgumentParser(
        prog="mailbridge", description="Send documents by email on behalf of your customers."
    )
    parser.add_argument("--version", action=_args.LazyVersion)
    parser.add_argument(
        "--debug",
        action="store_true",
        default=bool(os.environ.get(DEBUG_ENV)),
        help=f"show the traceback of an internal error (also: {DEBUG_ENV}=1)",
    )
    commands = parser.add_subparsers(dest="command", required=True)

    demo = commands.add_parser("demo", help="send an invoice through a local SMTP server")
    demo.set_defaults(handler=_cmd_demo)

    test = commands.add_parser("test-connection", help="check SMTP settings step by step")
    _add_server_options(test)
    test.add_argument(
        "--progress", action="store_true", help="show each step on stderr as it happens"
    )
    _cli_blacklist.add_connection_options(test, _add_dns_options)
    test.set_defaults(handler=_cmd_test_connection)

    send = commands.add_parser("send", help="send one email")
    _add_server_options(send)
    send.add_argument("--from", dest="sender", required=True, help="sender address")
    send.add_argument("--name", help="sender display name")
    send.add_argument("--to", required=True, help="recipients, comma-separated")
    send.add_argument("--cc")
    send.add_argument("--bcc")
    send.add_argument("--reply-to")
    send.add_argument("--subject", required=True)
    body = send.add_mutually_exclusive_group()
    body.add_argument("--body", help="plain-text body")
    body.add_argument("--body-file", help="read the body from this UTF-8 file")
    send.add_argument("--attach", action="append", metavar="FILE", help="attach a file (repeat)")
    send.set_defaults(handler=_cmd_send)

    spf = commands.add_parser("spf", help="check an SPF record, or plan the record to publish")
    spf_commands = spf.add_subparsers(dest="spf_command", required=True)
    check = spf_commands.add_parser("check", help="RFC 7208 check_host() for an IP")
    check.add_argument("domain")
    check.add_argument("--ip", required=True, type=_args.ip_address, help="the sending IP address")
    check.add_argument("--sender", help="the envelope sender (default: the domain)")
    _add_dns_options(check)
    check.set_defaults(handler=_cmd_spf_check)
    plan = spf_commands.add_parser("plan", help="the record that includes the platform")
    plan.add_argument("domain")
    plan.add_argument("--include", required=True, help="e.g. spf.app.example")
    _add_dns_options(plan)
    plan.set_defaults(handler=_cmd_spf_plan)

    dmarc = commands.add_parser("dmarc", help="show a domain's DMARC policy")
    dmarc.add_argument("domain")
    _add_dns_options(dmarc)
    dmarc.set_defaults(handler=_cmd_dmarc)

    find = commands.add_parser("discover", help="find SMTP and IMAP settings for an address")
    find.add_argument("email")
    find.add_argument("--json", action="store_true", help="machine-readable output")
    find.add_argument("--no-guess", action="store_true", help="do not probe common host names")
    find.add_argument("--timeout", type=_args.seconds, default=10.0)
    find.add_argument(
        "--progress", action="store_true", help="show each source on stderr as it answers"
    )
    _add_dns_options(find)
    find.set_defaults(handler=_cmd_discover)

    wizard = commands.add_parser("setup", help="find and prove the settings for an address")
    wizard.add_argument("email")
    wizard.add_argument(
        "--password-env",
        default=DEFAULT_PASSWORD_ENV,
        metavar="VAR",
        help="environment variable with the password (else you are asked)",
    )
    wizard.add_argument("--no-imap", action="store_true", help="only SMTP")
    wizard.add_argument("--timeout", type=_args.seconds, default=10.0)
    _add_dns_options(wizard)
    _cli_oauth.add_setup_options(wizard)
    wizard.set_defaults(handler=_cmd_setup)
    _cli_oauth.add_commands(commands)

    providers = commands.add_parser("providers", help="list the built-in provider presets")
    providers.add_argument("--domain", help="only the provider for this address domain")
    providers.set_defaults(handler=_cmd_providers)

    _cli_blacklist.add_blacklist_command(commands, _add_dns_options, _resolver)
    add_outbox_commands(commands)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit code. No error shows a traceback but a bug's.

    A `MailbridgeError` or a file that cannot be read is explained in one line;
    an interrupt exits with 130 and a closed pipe (`mailbridge providers | head`)
    quietly; anything else is a bug, reported in one line, with its traceback
    under `--debug` or MAILBRIDGE_DEBUG=1.
    """
    args = build_parser().parse_args(argv)
    try:
        return _run(args)
    except KeyboardInterrupt:
        return EXIT_INTERRUPTED
    except BrokenPipeError:
        _discard_stdout()
        return EXIT_FAILED
    except Exception as exc:
        if args.debug:
            raise
        # Only the type: the text of an unexpected error might hold anything, secrets too.
        print(
            f"mailbridge: internal error ({type(exc).__name__}); this is a bug. Run again "
            f"with --debug or {DEBUG_ENV}=1 to see the traceback and report it.",
            file=sys.stderr,
        )
        return EXIT_INTERNAL


def _run(args: argparse.Namespace) -> int:
    try:
        code: int = args.handler(args)
        sys.stdout.flush()  # a closed pipe shows here, inside the handlers below
    except (ConfigurationError, MessageError) as exc:
        print(f"mailbridge: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except DeliveryError as exc:
        print(f"mailbridge: {exc}\n{exc.diagnosis}", file=sys.stderr)
        return EXIT_FAILED
    except MailbridgeError as exc:
        print(f"mailbridge: {exc}", file=sys.stderr)
        return EXIT_FAILED
    except BrokenPipeError:
        raise
    except OSError as exc:
        if exc.filename is None:
            raise  # not about a file the user named: a bug or an untyped network error
        print(f"mailbridge: {exc.filename}: {exc.strerror}", file=sys.stderr)
        return EXIT_USAGE
    return code


def _discard_stdout() -> None:
    """After EPIPE, point stdout at /dev/null so that the flush at exit cannot fail again.

    As the Python documentation recommends (signal module, "Note on SIGPIPE").
    """
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError):  # stdout is not a file (e.g. captured in a test)
        pass


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
