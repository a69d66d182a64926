"""Development sessions: `nox -s tests`, `nox -s lint`, `nox -s typing`, `nox -s docs`.

`nox -s django` runs the Django integration's tests on Django 5.2 LTS and 6.1.
`nox -s system_python` runs the suite on the distribution's own Python
(`/usr/bin/python3`; on Debian it needs the python3-venv package).
"""

from __future__ import annotations

import nox

nox.options.sessions = ["tests", "system_python", "lint", "typing", "docs", "django"]
nox.options.reuse_existing_virtualenvs = True

TEST_DEPS = ["pytest>=8", "pytest-timeout>=2.3", "hypothesis>=6.100", "pytest-django>=4.9"]


@nox.session(python=["3.11", "3.12", "3.13"])
def tests(session: nox.Session) -> None:
    """The whole test suite (real-server tests need root and the Debian packages that
    scripts/test installs: postfix, dovecot, postgresql, redis-server)."""
    session.install("-e", ".[testing,dkim,microsoft,google,postgres,celery,django]", *TEST_DEPS)
    session.run("pytest", *session.posargs)


@nox.session(python="/usr/bin/python3", venv_backend="venv")
def system_python(session: nox.Session) -> None:
    """The whole suite on the distribution's Python (Debian 12: 3.11.2), not pyenv's."""
    session.install("-e", ".[testing,dkim,microsoft,google,postgres,celery,django]", *TEST_DEPS)
    session.run("pytest", *session.posargs)


@nox.session
def lint(session: nox.Session) -> None:
    """ruff: lint and formatting."""
    session.install("ruff>=0.6")
    session.run("ruff", "check", "src", "tests", "benchmarks")
    session.run("ruff", "format", "--check", "src", "tests", "benchmarks")


@nox.session
def typing(session: nox.Session) -> None:
    """mypy --strict on the package."""
    session.install("-e", ".[testing,microsoft,google,postgres,celery]", "mypy>=1.11", "pytest>=8")
    session.run("mypy")


@nox.session
def docs(session: nox.Session) -> None:
    """Run every code example in README.md and docs/."""
    session.install("-e", ".[testing,dkim,microsoft,google,postgres,celery,django]", *TEST_DEPS)
    session.run("pytest", "tests/test_docs.py", *session.posargs)


DJANGO_TESTS = [
    "tests/test_django_backend.py",
    "tests/test_django_project.py",
    "tests/test_django_outbox.py",
    "tests/test_django_postfix.py",
]


@nox.session(python="3.12")
@nox.parametrize("django", ["5.2", "6.1"])
def django(session: nox.Session, django: str) -> None:
    """The Django integration on Django 5.2 LTS and 6.x (6.x needs Python 3.12 or later)."""
    session.install(
        "-e", ".[testing,dkim,microsoft,google,postgres,celery]", f"Django~={django}.0", *TEST_DEPS
    )
    session.run("pytest", *DJANGO_TESTS, "tests/test_docs.py", *session.posargs)
