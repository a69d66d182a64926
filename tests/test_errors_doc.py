"""docs/errors.md names every error the library exports, and each one pickles."""

from __future__ import annotations

import pickle
import re
from pathlib import Path

import pytest

import mailbridge
from mailbridge import errors
from mailbridge.diagnosis import Category, Diagnosis

DOC = Path(__file__).resolve().parent.parent / "docs" / "errors.md"


def _tree() -> str:
    match = re.search(r"^```\nMailbridgeError\n(.*?)^```", DOC.read_text(), re.S | re.M)
    assert match, "docs/errors.md has no hierarchy block"
    return "MailbridgeError\n" + match.group(1)


@pytest.mark.parametrize("name", errors.__all__)
def test_every_error_is_in_the_documented_hierarchy(name: str) -> None:
    tree = _tree()
    assert re.search(rf"(^|[ ─]){name}\b", tree, re.M), f"{name} is missing from docs/errors.md"
    assert getattr(mailbridge, name) is getattr(errors, name)  # importable from the top


def test_the_documented_hierarchy_names_only_real_errors_in_the_right_place() -> None:
    parents: list[tuple[int, str]] = []
    for line in _tree().splitlines():
        match = re.match(r"^([│ ├└─]*)([A-Z]\w+)", line)
        assert match, line
        depth, name = len(match.group(1)) // 4, match.group(2)
        cls = getattr(errors, name)
        parents = [p for p in parents if p[0] < depth]
        if parents:
            assert issubclass(cls, getattr(errors, parents[-1][1])), name
        parents.append((depth, name))


def test_new_delivery_errors_pickle_and_time_outs_are_timeout_errors() -> None:
    diagnosis = Diagnosis(Category.TIMEOUT, "The server did not answer in time.")
    timeout = errors.DeliveryTimeout("no answer", diagnosis=diagnosis, temporary=True)
    unknown = errors.DeliveryOutcomeUnknown("lost", diagnosis=diagnosis)
    for error in (timeout, unknown, errors.PoolClosed("closed")):
        copy = pickle.loads(pickle.dumps(error))
        assert type(copy) is type(error) and str(copy) == str(error)
    assert isinstance(timeout, TimeoutError) and isinstance(timeout, errors.ConnectError)
    assert pickle.loads(pickle.dumps(timeout)).temporary
    assert not isinstance(unknown, errors.ConnectError) and not unknown.temporary
