"""Installed without the `testing` extra: the pytest plugin loads, the fakes say what to install.

Two ways: in this interpreter with aiosmtpd and trustme blocked by a meta-path
finder, and in a real virtual environment that has only the core dependencies.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
HINT = "pip install 'mailbridge-documents[testing]'"

# An application's tests: one needs nothing, one a fake DNS server (core dependencies
# only), one the fake SMTP server (the extra).
APP_TESTS = """
def test_plain():
    assert True

def test_dns(dns_server):
    assert dns_server.port

def test_smtp(smtp_server):
    raise AssertionError("not reached: the fixture fails first")
"""

BLOCK_EXTRA = """
import importlib.abc, sys

class BlockExtra(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.partition(".")[0] in {"aiosmtpd", "trustme"}:
            raise ModuleNotFoundError(f"No module named {name!r}", name=name)
        return None

sys.meta_path.insert(0, BlockExtra())
"""


def _run(args: list[str | Path], cwd: Path, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(arg) for arg in args],
        cwd=cwd,
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def _assert_app_tests_ran(result: subprocess.CompletedProcess[str]) -> None:
    out = result.stdout + result.stderr
    assert result.returncode == 1, out  # a failed test, not 3 (internal error) or 4 (usage)
    assert "2 passed, 1 error" in out, out
    assert HINT in out
    assert "Error while loading plugin" not in out
    assert "Traceback" not in out


@pytest.fixture
def blocked_env() -> dict[str, str]:
    source = str(ROOT / "src")
    path = os.pathsep.join(p for p in (source, os.environ.get("PYTHONPATH")) if p)
    return {"PYTHONPATH": path, "PYTEST_DISABLE_PLUGIN_AUTOLOAD": "1"}


def test_plugin_loads_with_the_extra_blocked(tmp_path: Path, blocked_env: dict[str, str]) -> None:
    (tmp_path / "test_app.py").write_text(APP_TESTS)
    script = BLOCK_EXTRA + (
        "import pytest\n"
        "sys.exit(pytest.main(['-q', '-p', 'no:cacheprovider',"
        " '-p', 'mailbridge.testing.pytest_plugin', 'test_app.py']))\n"
    )
    _assert_app_tests_ran(_run([sys.executable, "-c", script], tmp_path, **blocked_env))


def test_fakes_name_the_extra_when_blocked(tmp_path: Path, blocked_env: dict[str, str]) -> None:
    script = BLOCK_EXTRA + (
        "from mailbridge.testing import FakeDnsServer\n"
        "from mailbridge._demo import run_demo\n"
        "assert run_demo(print) == 2\n"
        "from mailbridge.testing import FakeSmtpServer\n"
    )
    result = _run([sys.executable, "-c", script], tmp_path, **blocked_env)
    assert result.returncode == 1, result.stderr
    assert "The demo runs a local SMTP server" in result.stdout
    assert HINT in result.stdout
    assert result.stderr.splitlines()[-1] == (
        f"ImportError: mailbridge.testing._smtp needs the testing extra "
        f"(aiosmtpd is missing): {HINT}"
    )


def _pip_reaches_the_index(python: Path, cwd: Path) -> bool:
    probe = _run([python, "-m", "pip", "index", "versions", "pytest"], cwd)
    return probe.returncode == 0


def test_real_venv_without_the_extra(tmp_path: Path) -> None:
    """pip install of the checkout (core dependencies only) and pytest: a new user's setup."""
    venv = tmp_path / "venv"
    created = _run([sys.executable, "-m", "venv", venv], tmp_path)
    assert created.returncode == 0, created.stderr
    python = venv / "bin" / "python"
    install = _run(
        [python, "-m", "pip", "install", "--quiet", "--disable-pip-version-check", ROOT, "pytest"],
        tmp_path,
        PIP_NO_INPUT="1",
    )
    if install.returncode != 0 and not _pip_reaches_the_index(python, tmp_path):
        pytest.skip("pip cannot reach the package index here, so no venv can be built (CI can)")
    assert install.returncode == 0, install.stderr
    has_extra = _run([python, "-c", "import trustme"], tmp_path)
    assert has_extra.returncode == 1, "the venv must not have the testing extra"

    (tmp_path / "test_app.py").write_text(APP_TESTS)
    clean = {"PYTHONPATH": "", "PYTEST_DISABLE_PLUGIN_AUTOLOAD": ""}
    _assert_app_tests_ran(
        _run([python, "-m", "pytest", "-q", "-p", "no:cacheprovider"], tmp_path, **clean)
    )

    version = _run([venv / "bin" / "mailbridge", "--version"], tmp_path, **clean)
    assert version.stdout == "mailbridge 0.1.0.dev0\n", version.stderr  # pyproject's version

    imported = _run(
        [python, "-c", "from mailbridge.testing import FakeSmtpServer"], tmp_path, **clean
    )
    assert imported.returncode == 1
    assert HINT in imported.stderr.splitlines()[-1]
