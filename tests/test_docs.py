"""Every Python example in docs/ runs as written; the README's example at least compiles.

A block that defines test functions is an application's test module: it is run
by pytest itself, with mailbridge's plugin providing the fixtures.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from mailbridge.testing import FakeDnsServer, FakeSmtpServer

pytest_plugins = ["pytester"]

ROOT = Path(__file__).resolve().parent.parent
BLOCK = re.compile(r"^```python\n(.*?)^```", re.DOTALL | re.MULTILINE)
PAGES = sorted((ROOT / "docs").glob("*.md"))


def _blocks(path: Path) -> list[str]:
    return BLOCK.findall(path.read_text(encoding="utf-8"))


def _is_test_module(block: str) -> bool:
    return re.search(r"^def test_", block, re.MULTILINE) is not None


def test_every_page_has_examples() -> None:
    assert PAGES
    for page in PAGES:
        assert _blocks(page), f"{page.name} has no Python example"


@pytest.mark.parametrize("page", PAGES, ids=[page.stem for page in PAGES])
def test_page_examples_run(
    page: Path, capsys: pytest.CaptureFixture[str], pytester: pytest.Pytester
) -> None:
    namespace: dict[str, object] = {"__name__": f"docs_{page.stem}"}
    try:
        for number, block in enumerate(_blocks(page), start=1):
            if _is_test_module(block):
                pytester.makepyfile(**{f"test_{page.stem}_{number}": block})
                result = pytester.runpytest_inprocess("-p", "no:cacheprovider", "-q")
                outcomes = result.parseoutcomes()
                assert outcomes.get("passed", 0) >= 1, result.stdout.str()
                assert set(outcomes) <= {"passed", "seconds"}, result.stdout.str()
                continue
            code = compile(block, f"{page.name} (example {number})", "exec")
            exec(code, namespace)
    finally:
        for value in namespace.values():
            if isinstance(value, (FakeSmtpServer, FakeDnsServer)):
                value.stop()
    capsys.readouterr()


def test_readme_example_compiles() -> None:
    (example,) = _blocks(ROOT / "README.md")
    compile(example, "README.md", "exec")
