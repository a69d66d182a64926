"""Every Python example in docs/ runs as written; the README's example at least compiles."""

from __future__ import annotations

import contextlib
import inspect
import re
from pathlib import Path

import pytest

from mailbridge import DeliveryClient
from mailbridge.testing import FakeSmtpServer
from mailbridge.testing.autoconfig import FakeAutoconfigServer
from mailbridge.testing.pytest_plugin import FAKE_PASSWORD, FAKE_USER

ROOT = Path(__file__).resolve().parent.parent
BLOCK = re.compile(r"^```python\n(.*?)^```", re.DOTALL | re.MULTILINE)
PAGES = sorted((ROOT / "docs").glob("*.md"))


def _blocks(path: Path) -> list[str]:
    return BLOCK.findall(path.read_text(encoding="utf-8"))


def test_every_page_has_examples() -> None:
    assert PAGES
    for page in PAGES:
        assert _blocks(page), f"{page.name} has no Python example"


@pytest.mark.parametrize("page", PAGES, ids=[page.stem for page in PAGES])
def test_page_examples_run(page: Path, capsys: pytest.CaptureFixture[str]) -> None:
    namespace: dict[str, object] = {"__name__": f"docs_{page.stem}"}
    try:
        for number, block in enumerate(_blocks(page), start=1):
            before = set(namespace)
            code = compile(block, f"{page.name} (example {number})", "exec")
            exec(code, namespace)
            for name in sorted(set(namespace) - before):
                function = namespace[name]
                if name.startswith("test_") and callable(function):
                    _run_test_function(function)
    finally:
        for value in namespace.values():
            if isinstance(value, FakeSmtpServer):
                value.stop()
    capsys.readouterr()


def _run_test_function(function: object) -> None:
    """Run a documented test function with fresh servers for the plugin's fixture names."""
    assert callable(function)
    parameters = list(inspect.signature(function).parameters)
    with contextlib.ExitStack() as stack:
        smtp = stack.enter_context(FakeSmtpServer(users={FAKE_USER: FAKE_PASSWORD}))
        fixtures: dict[str, object] = {"smtp_server": smtp}
        if "autoconfig_server" in parameters:
            fixtures["autoconfig_server"] = stack.enter_context(FakeAutoconfigServer())
        if "delivery_client" in parameters:
            fixtures["delivery_client"] = stack.enter_context(
                DeliveryClient.own_smtp(FAKE_USER, smtp.smtp_settings())
            )
        unknown = set(parameters) - set(fixtures)
        assert not unknown, f"documented test uses unknown fixtures {unknown}"
        function(*(fixtures[name] for name in parameters))


def test_readme_example_compiles() -> None:
    (example,) = _blocks(ROOT / "README.md")
    compile(example, "README.md", "exec")
