"""Every Python example in docs/ runs as written; the README's example at least compiles.

A block that defines test functions is an application's test module: it is run
by pytest itself, with mailbridge's plugin providing the fixtures.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from mailbridge.testing import (
    FakeAuthorizationServer,
    FakeDnsServer,
    FakeImapServer,
    FakeSmtpServer,
)

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
            servers = (FakeSmtpServer, FakeDnsServer, FakeImapServer, FakeAuthorizationServer)
            if isinstance(value, servers):
                value.stop()
    capsys.readouterr()


def test_readme_example_compiles() -> None:
    (example,) = _blocks(ROOT / "README.md")
    compile(example, "README.md", "exec")


LINKED_PAGES = [ROOT / "README.md", ROOT / "benchmarks" / "README.md", *PAGES]
_FENCED = re.compile(r"^```.*?^```", re.DOTALL | re.MULTILINE)
_INLINE_CODE = re.compile(r"`[^`\n]*`")
_LINK_TARGETS = (
    re.compile(r"\[[^\]\n]*\]\(\s*<?([^)\s>]*)>?(?:\s+\"[^\"]*\")?\s*\)"),  # [text](target)
    re.compile(r"<([A-Za-z][A-Za-z0-9+.-]*:[^>\s]*)>"),  # <https://...>
    re.compile(r"^\s*\[[^\]\n]+\]:\s*<?(\S+?)>?(?:\s|$)", re.MULTILINE),  # [ref]: target
)
_SCHEME = re.compile(r"^(?:[A-Za-z][A-Za-z0-9+.-]*:|//)")


def _link_targets(page: Path) -> list[str]:
    text = _INLINE_CODE.sub("", _FENCED.sub("", page.read_text(encoding="utf-8")))
    return [target for pattern in _LINK_TARGETS for target in pattern.findall(text)]


@pytest.mark.parametrize("page", LINKED_PAGES, ids=[str(p.relative_to(ROOT)) for p in LINKED_PAGES])
def test_links_stay_in_the_repository(page: Path) -> None:
    """Everything the project needs is in it: no link to the web or outside the checkout."""
    for target in _link_targets(page):
        assert not _SCHEME.match(target), f"{page.name} links outside the repository: {target}"
        path = target.partition("#")[0]
        if not path:
            continue  # an anchor on the same page
        resolved = (page.parent / path).resolve()
        assert resolved.is_relative_to(ROOT), f"{page.name} links outside the repository: {target}"
        assert resolved.exists(), f"{page.name} links to a missing file: {target}"


def test_link_check_sees_every_kind_of_link(tmp_path: Path) -> None:
    page = tmp_path / "page.md"
    page.write_text(
        '[a](docs/x.md#part) <https://example.com> [b](http://x.example "t")\n'
        "[ref]: ../outside.md\n`[not](a-link)`\n```\n[nor](this)\n```\n"
    )
    assert _link_targets(page) == [
        "docs/x.md#part",
        "http://x.example",
        "https://example.com",
        "../outside.md",
    ]
