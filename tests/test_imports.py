"""No import circles in src/mailbridge, and `import mailbridge` stays cheap.

Two checks for circles: every module is imported alone in a fresh interpreter (an
import order that only works when something else was imported first fails here), and
the import graph read from the source must have no cycle (`tests/_import_graph.py`
says what counts: module-level imports must form a DAG; imports inside functions are
counted too, so that a deferred import cannot hide a circle between layers;
`if TYPE_CHECKING:` imports are never executed and do not count).
"""

from __future__ import annotations

import ast
import importlib
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from mailbridge.testing import FakeSmtpServer
from mailbridge.testing.pytest_plugin import FAKE_PASSWORD, FAKE_USER

from . import _import_graph as graph

SRC = graph.ROOT

# Circles that are known and tolerated: none since the sans-I/O rewrite of smtp/ (issue
# 13) removed connection -> pipeline/transaction -> connection. Any circle fails the test.
KNOWN_SMTP_CYCLES: list[frozenset[str]] = []

# Runs the command line when imported; `python -m mailbridge` is tested in test_cli.
NOT_IMPORTABLE_ALONE = {"mailbridge.__main__"}

# Each module in a child forked from one interpreter that has loaded the third-party
# libraries but nothing of mailbridge: as fresh as a new interpreter for mailbridge's
# own modules, without paying the libraries' import time about a hundred times.
_FORK_EACH = """
import importlib, json, os, sys, traceback
for library in json.loads(sys.argv[1]):
    try:
        importlib.import_module(library)
    except ImportError:
        pass
assert not any(name.partition(".")[0] == "mailbridge" for name in sys.modules)
failures = {}
for module in json.loads(sys.argv[2]):
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(read)
        try:
            importlib.import_module(module)
        except BaseException:
            os.write(write, traceback.format_exc().encode()[-4000:])
            os._exit(1)
        os._exit(0)
    os.close(write)
    with os.fdopen(read, "rb") as pipe:
        output = pipe.read()
    _, status = os.waitpid(pid, 0)
    if status:
        failures[module] = output.decode(errors="replace") or f"wait status {status}"
print(json.dumps(failures))
"""


def _python(code: str, *args: str, timeout: float = 60) -> str:
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(SRC), os.environ.get("PYTHONPATH", "")]),
    }
    result = subprocess.run(
        [sys.executable, "-c", code, *args],
        capture_output=True, text=True, env=env, timeout=timeout, check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    return result.stdout


def _third_party_imports() -> list[str]:
    """Every non-mailbridge module that a module of mailbridge imports at its top level."""
    names: set[str] = set()
    for path in (SRC / graph.PACKAGE).rglob("*.py"):
        for node in ast.parse(path.read_text(encoding="utf-8")).body:
            if isinstance(node, ast.Import):
                names.update(alias.name for alias in node.names)
            elif isinstance(node, ast.ImportFrom) and not node.level and node.module:
                names.add(node.module)
    return sorted(name for name in names if name.partition(".")[0] != graph.PACKAGE)


@pytest.mark.skipif(not hasattr(os, "fork"), reason="forks one child per module")
def test_every_module_imports_alone() -> None:
    modules = sorted(graph.build().modules - NOT_IMPORTABLE_ALONE)
    assert len(modules) > 50
    output = _python(_FORK_EACH, json.dumps(_third_party_imports()), json.dumps(modules))
    failures = json.loads(output.strip().splitlines()[-1])
    assert failures == {}, "\n".join(f"{name}:\n{text}" for name, text in failures.items())


def _cycle_report(components: list[list[str]]) -> str:
    return "\n".join(" -> ".join(cycle) for cycle in components)


def test_module_level_imports_form_a_dag() -> None:
    cycles = graph.find_cycles(graph.build().of_kind(graph.MODULE))
    assert cycles == [], "import cycles:\n" + _cycle_report(cycles)


def test_no_circle_through_deferred_imports() -> None:
    built = graph.build()
    edges = {
        module: built.edges[module][graph.MODULE] | built.edges[module][graph.DEFERRED]
        for module in built.modules
    }
    cycles = graph.find_cycles(edges)
    components = [frozenset(_component(cycle[0], edges)) for cycle in cycles]
    new = [
        cycle
        for cycle, found in zip(cycles, components, strict=True)
        if found not in KNOWN_SMTP_CYCLES
    ]
    assert new == [], "import cycles (a function-level import counts):\n" + _cycle_report(new)
    gone = [sorted(known) for known in KNOWN_SMTP_CYCLES if known not in components]
    assert gone == [], f"no longer a cycle, remove from KNOWN_SMTP_CYCLES: {gone}"


def _component(start: str, edges: dict[str, set[str]]) -> set[str]:
    """The modules that `start` reaches and that reach `start`."""

    def reachable(source: str, forward: bool) -> set[str]:
        seen, todo = {source}, [source]
        while todo:
            node = todo.pop()
            targets = edges[node] if forward else {m for m, ts in edges.items() if node in ts}
            for target in targets - seen:
                seen.add(target)
                todo.append(target)
        return seen

    return reachable(start, forward=True) & reachable(start, forward=False)


def test_graph_finds_circles_and_ignores_type_checking(tmp_path: Path) -> None:
    """The checker itself: circles through a package and its lazy exports; TYPE_CHECKING is not."""
    package = tmp_path / "mailbridge"
    files = {
        "__init__.py": "",
        "a.py": "from .sub.c import C\n",
        "b.py": "def late():\n    from . import a\n",
        "e.py": "from .sub import D\n",
        "sub/__init__.py": (
            "from .c import C\nfrom .._lazy import exports\n"
            '__getattr__, __dir__ = exports(__name__, {".d": ("D",)}, globals())\n'
        ),
        "sub/c.py": (
            "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from ..b import late\n"
        ),
        "sub/d.py": "from mailbridge import e\n",
    }
    for name, text in files.items():
        (package / name).parent.mkdir(parents=True, exist_ok=True)
        (package / name).write_text(text, encoding="utf-8")
    built = graph.build(tmp_path)
    assert built.edges["mailbridge.a"][graph.MODULE] == {"mailbridge.sub", "mailbridge.sub.c"}
    assert built.edges["mailbridge.b"][graph.DEFERRED] == {"mailbridge.a"}
    assert built.edges["mailbridge.sub.c"][graph.TYPE_CHECKING] == {"mailbridge.b"}
    assert built.edges["mailbridge.e"][graph.MODULE] == {"mailbridge.sub", "mailbridge.sub.d"}
    assert graph.find_cycles(built.of_kind(graph.MODULE)) == [
        ["mailbridge.e", "mailbridge.sub.d", "mailbridge.e"]
    ]


# -- import mailbridge is cheap ---------------------------------------------------------

PACKAGES = [
    "mailbridge",
    "mailbridge.bounces",
    "mailbridge.dnsauth",
    "mailbridge.imap",
    "mailbridge.oauth",
    "mailbridge.providers",
    "mailbridge.testing",
]
# Libraries that only the parts which use them may load: IMAP, DNS, address validation,
# XML, TLS and sockets. (`mailbridge.smtp` is imported eagerly by its own package.)
HEAVY = [
    "imapclient",
    "imaplib",
    "dns",
    "email_validator",
    "publicsuffixlist",
    "defusedxml",
    "attrs",
    "ssl",
    "socket",
    "email",
]


@pytest.mark.parametrize("package", PACKAGES)
def test_importing_a_package_loads_nothing_heavy(package: str) -> None:
    code = f"import json, sys\nimport {package}\nprint(json.dumps(sorted(sys.modules)))"
    loaded = json.loads(_python(code))
    ours = sorted(name for name in loaded if name.partition(".")[0] == "mailbridge")
    expected = {"mailbridge", "mailbridge._lazy", package}
    if package == "mailbridge.testing":
        expected.add("mailbridge._distribution")
    assert set(ours) == expected
    assert [name for name in HEAVY if name in loaded] == []


@pytest.mark.parametrize("package", PACKAGES)
def test_every_exported_name_resolves(package: str) -> None:
    module = importlib.import_module(package)
    exported = module.__all__
    assert sorted(exported) == sorted(set(exported))
    missing = [name for name in exported if getattr(module, name, None) is None]
    assert missing == []
    assert set(exported) <= set(dir(module))
    with pytest.raises(AttributeError, match="no attribute 'NoSuchName'"):
        _ = module.NoSuchName


def _type_checking_imports(tree: ast.Module) -> dict[str, str]:
    """The names a package imports in `if TYPE_CHECKING:`, with their modules."""
    checked: dict[str, str] = {}
    for node in tree.body:
        if isinstance(node, ast.If) and isinstance(node.test, ast.Name):
            for statement in node.body:
                if isinstance(statement, ast.ImportFrom):
                    checked.update(
                        dict.fromkeys((a.name for a in statement.names), statement.module)
                    )
    return checked


def _literal_all(tree: ast.Module) -> list[str]:
    (names,) = (
        ast.literal_eval(node.value)
        for node in tree.body
        if isinstance(node, ast.Assign) and getattr(node.targets[0], "id", None) == "__all__"
    )
    return list(names)


@pytest.mark.parametrize("package", PACKAGES)
def test_type_checkers_see_what_runs(package: str) -> None:
    tree = ast.parse(SRC.joinpath(*package.split("."), "__init__.py").read_text(encoding="utf-8"))
    runtime = graph.lazy_exports(tree)
    assert _type_checking_imports(tree) == runtime
    assert sorted(runtime) == sorted(set(_literal_all(tree)) - {"__version__"})


def test_lazy_names_are_the_real_objects() -> None:
    code = textwrap.dedent("""
        import mailbridge
        from mailbridge._client import DeliveryClient
        assert mailbridge.DeliveryClient is DeliveryClient
        assert "DeliveryClient" in vars(mailbridge)
        print("ok")
    """)
    assert _python(code).strip() == "ok"


# -- sending through SMTP loads no IMAP and no DNS code ---------------------------------

# Top-level packages an application that only sends through SMTP never needs: the IMAP
# client, DNS (SPF imitation, blacklists, discovery), the autoconfig XML parser and the
# OAuth token store's database.
NOT_FOR_SMTP = ("imapclient", "dns", "defusedxml", "sqlite3")
# ... and mailbridge's own modules that use them.
NOT_FOR_SMTP_OURS = (
    "mailbridge.imap.",
    "mailbridge.dnsauth._spf",
    "mailbridge.dnsauth._dmarc",
    "mailbridge._spf_identity",
)


def _loaded_for_smtp_only(loaded: list[str]) -> list[str]:
    """The modules of `loaded` that sending through SMTP should not have imported."""
    return sorted(
        name
        for name in loaded
        if name.partition(".")[0] in NOT_FOR_SMTP or name.startswith(NOT_FOR_SMTP_OURS)
    )


@pytest.mark.parametrize(
    "name", ["DeliveryClient", "AsyncDeliveryClient", "SmtpSettings", "DocumentEmail"]
)
def test_importing_the_smtp_client_loads_no_imap_or_dns(name: str) -> None:
    code = (
        f"import json, sys\nfrom mailbridge import {name}\nprint(json.dumps(sorted(sys.modules)))"
    )
    assert _loaded_for_smtp_only(json.loads(_python(code))) == []


_SEND_THEN_USE_IMAP_AND_SPF = """
import asyncio, json, sys
from mailbridge import AsyncDeliveryClient, DeliveryClient, DocumentEmail, ImapSettings
from mailbridge import PlatformRelay, SmtpSettings

smtp = SmtpSettings(**json.loads(sys.argv[1]))
email = DocumentEmail(to="jane@customer.example", subject="Invoice", body="Attached.")
with DeliveryClient.own_smtp(smtp.username, smtp) as client:
    assert client.send(email).ok


async def send_async() -> None:
    async with AsyncDeliveryClient.own_smtp(smtp.username, smtp) as client:
        assert (await client.send(email)).ok


asyncio.run(send_async())
after_sending = sorted(sys.modules)
imap = ImapSettings("imap.acme.example", 993, "implicit_tls", username="a", password="b")
DeliveryClient.own_smtp(smtp.username, smtp, imap=imap).close()
after_imap = sorted(sys.modules)
relay = PlatformRelay(
    smtp, "Example App", "noreply@app.example", "bounces@app.example", sending_ips=["192.0.2.1"]
)
DeliveryClient.spf_imitation("billing@acme.example", relay).close()
print(json.dumps([after_sending, after_imap, sorted(sys.modules)]))
"""


def test_sending_loads_no_imap_or_dns_until_a_feature_needs_them(
    smtp_server: FakeSmtpServer,
) -> None:
    """A sync and an async send load neither; an IMAP account loads imapclient, SPF dns."""
    settings = smtp_server.smtp_settings()
    fields = {
        "host": settings.host,
        "port": settings.port,
        "security": settings.security.value,
        "username": FAKE_USER,
        "password": FAKE_PASSWORD,
        "ca_file": str(settings.ca_file),
    }
    output = _python(_SEND_THEN_USE_IMAP_AND_SPF, json.dumps(fields))
    after_sending, after_imap, after_spf = json.loads(output.strip().splitlines()[-1])
    assert smtp_server.delivered_count == 2
    assert _loaded_for_smtp_only(after_sending) == []
    assert "imapclient" in after_imap and "mailbridge.imap._archiver" in after_imap
    assert "dns.resolver" not in after_imap
    assert "dns.resolver" in after_spf and "mailbridge.dnsauth._spf" in after_spf


def test_address_validation_loads_on_first_address() -> None:
    """email_validator (its patterns take tens of milliseconds to compile) loads with the
    first address to validate, not with the client; and never dnspython (no DNS checks)."""
    code = textwrap.dedent("""
        import json, sys
        from mailbridge import DeliveryClient, DocumentEmail
        imported = "email_validator" in sys.modules
        DocumentEmail(to="jane@customer.example", subject="Invoice", body="Attached.")
        print(json.dumps([imported, "email_validator" in sys.modules, "dns" in sys.modules]))
    """)
    assert json.loads(_python(code)) == [False, True, False]


# -- the command line starts without the libraries of the commands it does not run -------

# Run `mailbridge ARGS` as `python -m mailbridge` does, in a fresh interpreter; the last
# line is the exit code and the modules loaded.
_RUN_CLI = """
import json, runpy, sys
sys.argv = ["mailbridge", *json.loads(sys.argv[1])]
try:
    runpy.run_module("mailbridge", run_name="__main__", alter_sys=True)
except SystemExit as exc:
    code = exc.code
print(json.dumps([code, sorted(sys.modules)]))
"""
# What no sub-command needs to parse its arguments: DNS, IMAP, XML, databases, OAuth,
# the installed metadata (`--version` only), and mailbridge's SMTP/IMAP/DNS layers.
NOT_FOR_CLI_START = (
    "dns",
    "imapclient",
    "email_validator",
    "defusedxml",
    "sqlite3",
    "psycopg",
    "msal",
    "attrs",
    "importlib.metadata",
)
NOT_FOR_CLI_START_OURS = (
    "mailbridge.smtp",
    "mailbridge.imap",
    "mailbridge.dnsauth",
    "mailbridge.providers",
    "mailbridge.outbox",
    "mailbridge.oauth",
    "mailbridge._client",
)


@pytest.mark.parametrize(
    ("argv", "code"),
    [
        (["--help"], 0),
        (["demo", "--help"], 0),
        (["spf", "check", "--help"], 0),
        (["blacklist", "--help"], 0),
        (["outbox", "status", "--help"], 0),
        (["setup", "--help"], 0),
        (["no-such-command"], 2),
    ],
)
def test_cli_parses_arguments_without_heavy_libraries(argv: list[str], code: int) -> None:
    """`mailbridge --help` and usage errors load no dnspython, imapclient, ...: each command
    imports what it needs when it runs (tests/test_cli*.py run the commands)."""
    output = _python(_RUN_CLI, json.dumps(argv))
    exit_code, loaded = json.loads(output.strip().splitlines()[-1])
    assert exit_code == code
    heavy = [
        name
        for name in loaded
        if name.partition(".")[0] in NOT_FOR_CLI_START
        or name in NOT_FOR_CLI_START
        or name.startswith(NOT_FOR_CLI_START_OURS)
    ]
    assert heavy == []
