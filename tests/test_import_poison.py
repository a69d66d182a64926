"""One message whose answer passes the limits costs that message only, and is not met again."""

from __future__ import annotations

import pytest

from mailbridge import InboxImporter
from mailbridge.diagnosis import Category, Diagnosis
from mailbridge.errors import ImapLimitExceeded
from mailbridge.imap import ImapLimits
from mailbridge.imap._folder_session import MAX_REOPENS, FolderSession

from ._scripted_imap import ScriptedImap, _uids
from .test_import_hostile import ENCODED, ENVELOPE, _good

# A part of an ordinary message; 10,000 of them make a BODYSTRUCTURE line over 1 MB,
# the wire's line limit. Any sender can mail that.
_SMALL_PART = (
    b'("text" "plain" ("charset" "us-ascii" "name" "' + b"n" * 40 + b'.txt") NIL NIL "7bit" 1 1)'
)
MANY_PARTS = b"BODYSTRUCTURE (" + _SMALL_PART * 10_000 + b' "mixed") ' + ENVELOPE


def _marked(server: ScriptedImap) -> list[int]:
    return [uid for r in server.requests if b"UID STORE" in r for uid in _uids(r.split()[3])]


def _lying_size(server: ScriptedImap) -> None:
    """UID 2 declares a 40-byte part, ignores the partial range and sends 10 MB."""
    server.structures[2] = server.structures[2].replace(b"%d" % len(ENCODED), b"40")
    server.bodies[(2, "2")] = b"A" * (10 * 1024 * 1024)  # over the default 8 MiB literal cap
    server.ignore_ranges.add(2)


def _many_parts(server: ScriptedImap) -> None:
    server.structures[2] = MANY_PARTS


@pytest.mark.parametrize("poison", [_lying_size, _many_parts], ids=["lying-size", "many-parts"])
def test_a_message_over_the_limits_is_reported_and_not_met_again(poison: object) -> None:
    assert len(MANY_PARTS) > 1_000_000
    with ScriptedImap() as server:
        server.search_uids = [1, 2, 3]
        for uid in (1, 2, 3):
            _good(server, uid)
        poison(server)  # type: ignore[operator]
        importer = InboxImporter(server.settings())
        batch = importer.fetch()
        assert sorted(d.uid for d in batch.documents) == [1, 3]
        assert [uid for uid, _ in batch.problems] == [2]
        assert "over" in batch.problems[0][1]
        assert batch.uids == (1, 2, 3)
        importer.commit(batch)
        assert _marked(server) == [1, 2, 3]
        again = importer.fetch(batch.checkpoint)
    assert again.uids == () and again.documents == () and again.problems == ()


def test_many_messages_over_the_limits_cost_one_reopen_each() -> None:
    """Any number of over-limit messages (any sender can mail them): the rest still import."""
    poisoned = [2, 3, 4, 5, 6]
    with ScriptedImap() as server:
        server.search_uids = [1, *poisoned, 7]
        for uid in (1, *poisoned, 7):
            _good(server, uid)
        for uid in poisoned:
            server.structures[uid] = MANY_PARTS
        batch = InboxImporter(server.settings()).fetch()
        logins = sum(1 for r in server.requests if b" LOGIN " in r)
    assert sorted(d.uid for d in batch.documents) == [1, 7]
    assert sorted({uid for uid, _ in batch.problems}) == poisoned
    assert batch.uids == (1, *poisoned, 7)
    assert logins <= 1 + len(poisoned) + MAX_REOPENS


def test_reopening_is_bounded() -> None:
    """Past its budget a session raises the failure that closed it instead of reopening."""
    failure = ImapLimitExceeded(
        "the IMAP server sent more than 1000000 bytes on one line",
        diagnosis=Diagnosis(Category.PROTOCOL, "The IMAP server sent too much."),
    )
    with ScriptedImap() as server:
        session = FolderSession(server.settings(), "INBOX", ImapLimits(), max_reopens=2)
        try:
            session.reopen(failure)
            session.reopen(failure)
            with pytest.raises(ImapLimitExceeded) as caught:
                session.reopen(failure)
        finally:
            session.close()
        logins = sum(1 for r in server.requests if b" LOGIN " in r)
    assert caught.value is failure
    assert logins == 3
