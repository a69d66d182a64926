"""`SqlStore`: the outbox store over any SQL `Dialect` (SQLite, PostgreSQL).

Every method is one short transaction; none is held while a worker talks SMTP.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Sequence
from typing import Any

import attrs

from ._pacing import Pacing, recipient_count
from ._schema import MIGRATIONS, SCHEMA_VERSION
from ._sql_base import ROW, marks
from ._sql_bounces import BounceQueries
from ._store import FINAL_STATES, Claimed, NewMessage, Outcome, Row, State

__all__ = ["SqlStore"]

log = logging.getLogger("mailbridge.outbox")

_CLAIMED = (
    "m.id, tenant, message_id, envelope_sender, recipients, bcc, smtputf8, mode, note, b.data,"
    " attempts, created_at, deadline, lease_owner, lease_expires, envelope_id"
)


class SqlStore(Pacing, BounceQueries):
    """The `Store` protocol over a SQL database (see docs/outbox.md for the semantics)."""

    # -- schema ------------------------------------------------------------------

    def schema_version(self) -> int:
        with self._transaction(write=False) as cursor:
            return self._version(cursor)

    def _version(self, cursor: Any) -> int:
        self.dialect.lock_schema(cursor)  # concurrent CREATE TABLE fails on PostgreSQL
        self._run(cursor, "CREATE TABLE IF NOT EXISTS outbox_schema (version INTEGER NOT NULL)")
        found = self._run(cursor, "SELECT MAX(version) FROM outbox_schema").fetchone()
        return int(found[0] or 0)

    def migrate(self) -> int:
        with self._transaction() as cursor:
            version = self._version(cursor)
            types = {
                "blob": self.dialect.blob,
                "real": self.dialect.real,
                "recipient_count": self.dialect.json_length.format("m.recipients"),
            }
            for number, statements in enumerate(MIGRATIONS, start=1):
                if number <= version:
                    continue
                for statement in statements:
                    self._run(cursor, statement.format(**types))
                self._run(cursor, "INSERT INTO outbox_schema (version) VALUES (?)", (number,))
            return max(version, SCHEMA_VERSION)

    # -- enqueue -----------------------------------------------------------------

    def enqueue(self, message: NewMessage) -> tuple[str, bool]:
        with self._transaction() as cursor:
            shift = self._shift(cursor, message.created_at)
            if shift:
                message = attrs.evolve(
                    message,
                    created_at=message.created_at + shift,
                    not_before=message.not_before + shift,
                    deadline=message.deadline + shift,
                )
            if message.idempotency_key is not None:
                existing = self._existing_id(cursor, message)
                if existing is not None:
                    return existing, False
            inserted = self._run(
                cursor,
                "INSERT INTO outbox_messages (id, tenant, idempotency_key, state, message_id,"
                " envelope_sender, recipients, bcc, smtputf8, mode, note, size, attempts,"
                " created_at, updated_at, not_before, deadline, envelope_id, verp_token)"
                f" VALUES ({marks(19)}) ON CONFLICT (tenant, idempotency_key) DO NOTHING",
                (
                    message.id,
                    message.tenant,
                    message.idempotency_key,
                    State.QUEUED.value,
                    message.message_id,
                    message.envelope_sender,
                    json.dumps(list(message.recipients)),
                    json.dumps(list(message.bcc)),
                    int(message.smtputf8),
                    message.mode,
                    message.note,
                    len(message.data),
                    0,
                    message.created_at,
                    message.created_at,
                    message.not_before,
                    message.deadline,
                    message.envelope_id,
                    message.verp_token,
                ),
            )
            if inserted.rowcount == 0:  # the same key committed meanwhile by another process
                existing = self._existing_id(cursor, message)
                assert existing is not None, "a conflicting row that is not there"
                return existing, False
            self._run(
                cursor,
                "INSERT INTO outbox_bodies (id, data) VALUES (?, ?)",
                (message.id, message.data),
            )
            if message.limits is not None:
                self._save_limits(cursor, message.tenant, message.limits, message.created_at)
            self.dialect.notify(cursor)
            return message.id, True

    def _existing_id(self, cursor: Any, message: NewMessage) -> str | None:
        found = self._run(
            cursor,
            "SELECT id FROM outbox_messages WHERE tenant = ? AND idempotency_key = ?",
            (message.tenant, message.idempotency_key),
        ).fetchone()
        return None if found is None else str(found[0])

    # -- claiming ----------------------------------------------------------------

    def claim(self, owner: str, *, limit: int, lease: float, now: float) -> list[Claimed]:
        return self.exchange([], owner, limit=limit, lease=lease, now=now)[1]

    def exchange(
        self, outcomes: Sequence[Outcome], owner: str, *, limit: int, lease: float, now: float
    ) -> tuple[list[bool], list[Claimed]]:
        if not outcomes and limit < 1:
            return [], []
        with self._transaction() as cursor:
            shift = self._shift(cursor, now)
            held = self._record_all(cursor, outcomes, owner, now, shift)
            if limit < 1:
                return held, []
            return held, self._claim(cursor, owner, None, limit, lease, now + shift, shift)

    def claim_one(self, id: str, owner: str, *, lease: float, now: float) -> Claimed | None:
        with self._transaction() as cursor:
            shift = self._shift(cursor, now)
            claimed = self._claim(cursor, owner, id, 1, lease, now + shift, shift)
        return claimed[0] if claimed else None

    def _claim(  # noqa: PLR0917 (one internal call shape)
        self,
        cursor: Any,
        owner: str,
        id: str | None,
        limit: int,
        lease: float,
        now: float,
        shift: float,
    ) -> list[Claimed]:
        candidates = self._candidates(cursor, id, limit, now)
        if not candidates:
            return []
        tenants = self._tenants(cursor, sorted({c[1] for c in candidates}), now)
        taken: list[tuple[str, bool]] = []
        for key, tenant_key, state, recipients, created in candidates:
            if len(taken) >= limit:
                break
            if state == State.CLAIMED.value:  # an expired lease: resolve, never resend
                taken.append((key, True))
                continue
            tenant = tenants.get(tenant_key)
            if tenant is not None:
                count = recipient_count(recipients)
                if self._hold_until(cursor, tenant_key, tenant, count, created, now):
                    continue
                if tenant.full():
                    continue
                tenant.take(key, count)
            taken.append((key, False))
        if id is None and taken:
            self._cursor = next(c[1] for c in candidates if c[0] == taken[-1][0])
        self._hold(cursor, tenants, now)
        self._log_sends(cursor, owner, tenants, now)
        return self._take(cursor, owner, taken, now + lease, now, shift)

    def _take(  # noqa: PLR0917 (one internal call shape)
        self,
        cursor: Any,
        owner: str,
        taken: list[tuple[str, bool]],
        until: float,
        now: float,
        shift: float,
    ) -> list[Claimed]:
        """Claim `taken`; the rows come back with their times in the caller's terms."""
        if not taken:
            return []
        recovering = dict(taken)
        for id, recover in taken:
            self._run(
                cursor,
                "UPDATE outbox_messages SET state = 'claimed', lease_owner = ?, lease_expires = ?,"
                " attempts = attempts + ?, updated_at = ?, wait_reason = NULL WHERE id = ?",
                (owner, until, 0 if recover else 1, now, id),
            )
        rows = self._run(
            cursor,
            f"SELECT {_CLAIMED} FROM outbox_messages m JOIN outbox_bodies b ON b.id = m.id"
            f" WHERE m.id IN ({marks(len(taken))})",
            list(recovering),
        ).fetchall()
        order = {id: index for index, (id, _) in enumerate(taken)}
        rows.sort(key=lambda row: order[row[0]])
        return [
            Claimed(
                id=row[0],
                tenant=row[1],
                message_id=row[2],
                envelope_sender=row[3],
                recipients=tuple(json.loads(row[4])),
                bcc=tuple(json.loads(row[5])),
                smtputf8=bool(row[6]),
                mode=row[7],
                note=row[8],
                data=bytes(row[9]),
                attempts=int(row[10]),
                created_at=float(row[11]) - shift,
                deadline=float(row[12]) - shift,
                lease_owner=row[13],
                lease_expires=float(row[14]) - shift,
                envelope_id=row[15],
                recovering=recovering[row[0]],
            )
            for row in rows
        ]

    # -- recording ---------------------------------------------------------------

    def record(self, outcomes: Sequence[Outcome], owner: str, *, now: float) -> list[bool]:
        if not outcomes:
            return []
        with self._transaction() as cursor:
            return self._record_all(cursor, outcomes, owner, now, self._shift(cursor, now))

    def _record_all(
        self, cursor: Any, outcomes: Sequence[Outcome], owner: str, now: float, shift: float
    ) -> list[bool]:
        return [
            self._record(
                cursor,
                outcome
                if outcome.not_before is None or not shift
                else attrs.evolve(outcome, not_before=outcome.not_before + shift),
                owner,
                now + shift,
            )
            for outcome in outcomes
        ]

    def _record(self, cursor: Any, outcome: Outcome, owner: str, now: float) -> bool:
        if outcome.state is State.QUEUED:
            sql = (
                "UPDATE outbox_messages SET state = 'queued', not_before = ?, wait_reason = ?,"
                " error = COALESCE(?, error), attempts = attempts - ?, lease_owner = NULL,"
                " lease_expires = NULL, updated_at = ?"
                " WHERE id = ? AND state = 'claimed' AND lease_owner = ?"
            )
            params: tuple[Any, ...] = (
                now if outcome.not_before is None else outcome.not_before,
                outcome.reason,
                outcome.error,
                0 if outcome.count_attempt else 1,
                now,
            )
        else:
            sql = (
                "UPDATE outbox_messages SET state = ?, result = COALESCE(?, result),"
                " error = ?, sent_at = COALESCE(?, sent_at), lease_owner = NULL,"
                " lease_expires = NULL, wait_reason = NULL, updated_at = ?"
                " WHERE id = ? AND state = 'claimed' AND lease_owner = ?"
            )
            sent_at = now if outcome.state is State.SENT else None
            params = (outcome.state.value, outcome.result, outcome.error, sent_at, now)
        done = bool(self._run(cursor, sql, (*params, outcome.id, owner)).rowcount == 1)
        if done and outcome.state is State.QUEUED and not outcome.count_attempt:
            self._give_back(cursor, [outcome.id], owner)  # nothing went out: slot back
        return done

    def finish(
        self,
        id: str,
        owner: str,
        state: State,
        *,
        now: float,
        result: str | None = None,
        error: str | None = None,
    ) -> bool:
        return self.record([Outcome(id, state, result, error)], owner, now=now)[0]

    def reschedule(
        self,
        id: str,
        owner: str,
        *,
        now: float,
        not_before: float,
        reason: str,
        error: str | None = None,
        count_attempt: bool = True,
    ) -> bool:
        outcome = Outcome(
            id, State.QUEUED, None, error, not_before, reason, count_attempt=count_attempt
        )
        return self.record([outcome], owner, now=now)[0]

    def release(self, ids: Sequence[str], owner: str, *, now: float) -> int:
        changes = "state = 'queued', attempts = attempts - 1, lease_owner = NULL,"
        changes += " lease_expires = NULL, updated_at = ?"
        return self._held(ids, owner, changes, now, now, give_back=True)

    def renew(
        self, ids: Sequence[str], owner: str, *, until: float, now: float | None = None
    ) -> int:
        return self._held(ids, owner, "lease_expires = ?", until, now)

    def _held(
        self,
        ids: Sequence[str],
        owner: str,
        changes: str,
        value: float,
        now: float | None,
        *,
        give_back: bool = False,
    ) -> int:
        """Apply `changes` (one `?`, for `value`, a time by the caller's clock whose `now`
        is given: time.time() when None) to those of `ids` that `owner` holds
        (`give_back`: and drop the sends their claims logged)."""
        if not ids:
            return 0
        with self._transaction() as cursor:
            value += self._shift(cursor, time.time() if now is None else now)
            if give_back:
                mine = self._run(
                    cursor,
                    "SELECT id FROM outbox_messages WHERE state = 'claimed' AND lease_owner = ?"
                    f" AND id IN ({marks(len(ids))}) {self.dialect.row_lock}",
                    (owner, *ids),
                ).fetchall()
                self._give_back(cursor, [row[0] for row in mine], owner)
            return int(
                self._run(
                    cursor,
                    f"UPDATE outbox_messages SET {changes} WHERE state = 'claimed'"
                    f" AND lease_owner = ? AND id IN ({marks(len(ids))})",
                    (value, owner, *ids),
                ).rowcount
            )

    # -- reading -----------------------------------------------------------------

    def get(self, id: str) -> Row | None:
        with self._transaction(write=False) as cursor:
            found = self._run(
                cursor, f"SELECT {ROW} FROM outbox_messages WHERE id = ?", (id,)
            ).fetchone()
            return None if found is None else self._with_bounces(cursor, [found])[0]

    def rows(
        self,
        *,
        tenant: str | None = None,
        state: State | None = None,
        limit: int = 100,
        offset: int = 0,
        delivery: str | None = None,
    ) -> list[Row]:
        clauses, params = self._filters(tenant, state, delivery)
        with self._transaction(write=False) as cursor:
            found = self._run(
                cursor,
                f"SELECT {ROW} FROM outbox_messages {clauses}"
                " ORDER BY created_at DESC, id LIMIT ? OFFSET ?",
                (*params, limit, offset),
            ).fetchall()
            return self._with_bounces(cursor, found)

    def counts(self, *, tenant: str | None = None) -> dict[State, int]:
        clauses, params = self._filters(tenant, None)
        with self._transaction(write=False) as cursor:
            found = self._run(
                cursor,
                f"SELECT state, COUNT(*) FROM outbox_messages {clauses} GROUP BY state",
                params,
            ).fetchall()
        return {State(state): int(count) for state, count in found}

    @staticmethod
    def _filters(
        tenant: str | None, state: State | None, delivery: str | None = None
    ) -> tuple[str, list[Any]]:
        clauses, params = [], []
        if delivery is not None:
            clauses.append("delivery = ?")
            params.append(delivery)
        if tenant is not None:
            clauses.append("tenant = ?")
            params.append(tenant)
        if state is not None:
            clauses.append("state = ?")
            params.append(State(state).value)
        return ("WHERE " + " AND ".join(clauses) if clauses else ""), params

    def next_due(self) -> float | None:
        with self._transaction(write=False) as cursor:
            times = [
                self._run(
                    cursor, f"SELECT MIN({column}) FROM outbox_messages WHERE state = ?", (state,)
                ).fetchone()[0]
                for column, state in (("not_before", "queued"), ("lease_expires", "claimed"))
            ]
        found = [float(value) for value in times if value is not None]
        return min(found) if found else None

    # -- operator actions --------------------------------------------------------

    def retry(self, id: str, *, now: float, force: bool = False) -> bool:
        states = [State.FAILED, State.PARKED, State.CANCELLED]
        if force:
            states.append(State.OUTCOME_UNKNOWN)
        with self._transaction() as cursor:
            now += self._shift(cursor, now)
            return bool(
                self._run(
                    cursor,
                    "UPDATE outbox_messages SET state = 'queued', not_before = ?,"
                    " deadline = ? + (deadline - created_at), wait_reason = NULL, updated_at = ?"
                    f" WHERE id = ? AND state IN ({marks(len(states))})",
                    (now, now, now, id, *(state.value for state in states)),
                ).rowcount
                == 1
            )

    def cancel(self, id: str, *, now: float) -> bool:
        with self._transaction() as cursor:
            now += self._shift(cursor, now)
            return bool(
                self._run(
                    cursor,
                    "UPDATE outbox_messages SET state = 'cancelled', wait_reason = NULL,"
                    " updated_at = ? WHERE id = ? AND state = 'queued'",
                    (now, id),
                ).rowcount
                == 1
            )

    def purge(self, *, before: float) -> int:
        final = sorted(state.value for state in FINAL_STATES)
        with self._transaction() as cursor:
            where = f"WHERE updated_at < ? AND state IN ({marks(len(final))})"
            for table in ("outbox_bodies", "outbox_bounces"):
                self._run(
                    cursor,
                    f"DELETE FROM {table} WHERE id IN (SELECT id FROM outbox_messages {where})",
                    (before, *final),
                )
            return int(
                self._run(cursor, f"DELETE FROM outbox_messages {where}", (before, *final)).rowcount
            )

    # -- waking ------------------------------------------------------------------

    def notify(self) -> None:
        with self._lock:
            self.dialect.notify(self._connection.cursor())

    def wait(self, timeout: float) -> None:
        self.dialect.wait(max(0.0, timeout))

    def close(self) -> None:
        with self._lock:
            self.dialect.close()
            self._connection.close()
