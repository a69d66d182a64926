"""The bounce queries of `SqlStore`: find a sent message, record bounces per recipient,
settle an `outcome_unknown` message a DSN proves the server took."""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from typing import Any

import attrs

from ._sql_base import ROW, SqlBase, marks, row
from ._status import result_json
from ._store import BounceRecord, Row, State

__all__ = ["BounceQueries"]

_BOUNCE = "recipient, action, status, reason, diagnostic, kind, matched_by, reported_at"
_FIND = {
    "envelope_id": "envelope_id = ?",
    "message_id": "message_id = ?",
    "verp": "verp_token = ?",
    # a recipient alone: only sent messages, the address as a JSON string in the list
    "recipient": "state = 'sent' AND LOWER(recipients) LIKE ? ESCAPE '!'",
}
# The `result` of a message a DSN settled: no reply of ours, so no per-recipient outcome.
_SETTLED = result_json((), {}, None, settled_by="dsn")


def _bounce(values: Sequence[Any]) -> BounceRecord:
    recipient, action, status, reason, diagnostic, kind, matched_by, reported_at = values
    return BounceRecord(
        recipient, action, status, reason, diagnostic, kind, matched_by, float(reported_at)
    )


def _like(address: str) -> str:
    """A LIKE pattern (escape `!`) matching `address` as a JSON string in a JSON list."""
    text = json.dumps(address.lower())
    return "%" + text.replace("!", "!!").replace("%", "!%").replace("_", "!_") + "%"


def _delivery(records: Sequence[tuple[str, ...]]) -> str | None:
    actions = {record[0] for record in records}
    return "bounced" if "failed" in actions else "delayed" if actions else None


class BounceQueries(SqlBase):
    """Finding messages and recording bounces (see `Store.find`, `Store.record_bounces`)."""

    def _with_bounces(self, cursor: Any, found: Sequence[Sequence[Any]]) -> list[Row]:
        """Rows with their bounce records (one query for those that have any)."""
        ids = [values[0] for values in found if values[-1] is not None]
        records: dict[str, list[BounceRecord]] = {}
        if ids:
            for values in self._run(
                cursor,
                f"SELECT id, {_BOUNCE} FROM outbox_bounces WHERE id IN ({marks(len(ids))})"
                " ORDER BY id, recipient",
                ids,
            ).fetchall():
                records.setdefault(values[0], []).append(_bounce(values[1:]))
        return [row(values, records.get(values[0], ())) for values in found]

    def find(self, key: str, value: str) -> Row | None:
        if key not in _FIND:
            raise ValueError(f"unknown key {key!r}")
        with self._transaction(write=False) as cursor:
            found = self._run(
                cursor,
                f"SELECT {ROW} FROM outbox_messages WHERE {_FIND[key]}"
                " ORDER BY created_at DESC, id LIMIT 1",
                (_like(value) if key == "recipient" else value,),
            ).fetchone()
            return None if found is None else self._with_bounces(cursor, [found])[0]

    def record_bounces(
        self,
        id: str,
        records: Sequence[BounceRecord],
        *,
        settle: bool = False,
        now: float | None = None,
    ) -> bool:
        changed = False
        with self._transaction() as cursor:
            lock = self.dialect.row_lock  # one writer per message: the upserts below
            found = self._run(
                cursor, f"SELECT state FROM outbox_messages WHERE id = ? {lock}", (id,)
            ).fetchone()
            if found is None:
                return False
            if settle and found[0] == State.OUTCOME_UNKNOWN.value:
                changed = self._settle(cursor, id, time.time() if now is None else now)
            for record in records:
                old = self._run(
                    cursor,
                    f"SELECT {_BOUNCE} FROM outbox_bounces WHERE id = ? AND recipient = ?",
                    (id, record.recipient),
                ).fetchone()
                if old is not None:
                    kept = _bounce(old)
                    if kept.action == "failed" and record.action != "failed":
                        continue  # a bounce is final: a late "delayed" does not undo it
                    if attrs.evolve(kept, reported_at=record.reported_at) == record:
                        continue  # the same report again (at-least-once delivery)
                    self._run(
                        cursor,
                        "DELETE FROM outbox_bounces WHERE id = ? AND recipient = ?",
                        (id, record.recipient),
                    )
                self._run(
                    cursor,
                    f"INSERT INTO outbox_bounces (id, {_BOUNCE}) VALUES ({marks(9)})",
                    (id, *attrs.astuple(record)),
                )
                changed = True
            if changed:
                actions = self._run(
                    cursor, "SELECT action FROM outbox_bounces WHERE id = ?", (id,)
                ).fetchall()
                self._run(
                    cursor,
                    "UPDATE outbox_messages SET delivery = ? WHERE id = ?",
                    (_delivery(actions), id),
                )
        return changed

    def _settle(self, cursor: Any, id: str, now: float) -> bool:
        """`outcome_unknown` → `sent`, proven by a DSN (see `Store.record_bounces`).

        The row is locked (PostgreSQL) or the database is (SQLite), and the update is
        conditional on the state all the same: a `retry(id, force=True)` that came
        first wins (the message is `queued` again), and this changes nothing. `sent_at`
        is when the attempt whose outcome was unknown ended (the row's last update), not
        when the DSN came. An envelope id that another message has too (an application's
        PreparedMessage enqueued twice) proves nothing: the DSN may be about the other.
        """
        now += self._shift(cursor, now)
        return bool(
            self._run(
                cursor,
                "UPDATE outbox_messages SET state = 'sent',"
                " sent_at = COALESCE(sent_at, updated_at), result = ?, error = NULL,"
                " wait_reason = NULL, lease_owner = NULL, lease_expires = NULL,"
                " updated_at = ? WHERE id = ? AND state = 'outcome_unknown'"
                " AND (SELECT COUNT(*) FROM outbox_messages o"
                " WHERE o.envelope_id = outbox_messages.envelope_id) = 1",
                (_SETTLED, now, id),
            ).rowcount
            == 1
        )
