"""Which messages a claim takes: fair turns over tenants and per-tenant pacing.

`Pacing` is the part of `SqlStore` that chooses: expired leases first, then due
messages round-robin over the tenants with queued messages (oldest first within a
tenant, each step one seek on the `outbox_fair` index), leaving out tenants at their
connection limit, and holding back a tenant whose sliding per-minute or per-day window
(`outbox_sends`) is full until the oldest send in it leaves.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from typing import Any

from ._sql_base import SqlBase, marks

__all__ = ["DAY", "DUE", "MINUTE", "Pacing", "Tenant"]

MINUTE = 60.0
DAY = 86_400.0
DUE = "((state = 'queued' AND not_before <= ?) OR (state = 'claimed' AND lease_expires < ?))"


class Tenant:
    """A tenant's limits and its sends in the sliding windows, inside one claim transaction.

    `minute` / `day` count the claims logged in `outbox_sends` during the last minute /
    day plus those this claim takes; `at_limit` says which window is full, if any.
    """

    def __init__(self, values: Sequence[Any], in_flight: int, minute: int, day: int) -> None:
        (_, self.provider, self.per_minute, self.per_day, self.max_in_flight) = values
        self.minute, self.day = minute, day
        self.in_flight = in_flight
        self.taken: list[str] = []
        self.held: tuple[float, str] | None = None  # once full, for the rest of the claim

    def at_limit(self) -> tuple[float, int, str] | None:
        """(window length, sends over the limit, reason) when the next message must wait."""
        if self.per_day is not None and self.day >= self.per_day:
            return DAY, self.day - self.per_day, f"waiting: {self.provider} daily limit"
        if self.per_minute is not None and self.minute >= self.per_minute:
            reason = f"waiting: {self.provider} per-minute limit"
            return MINUTE, self.minute - self.per_minute, reason
        return None

    def full(self) -> bool:
        return self.max_in_flight is not None and self.in_flight >= self.max_in_flight

    def take(self, id: str) -> None:
        self.minute += 1
        self.day += 1
        self.in_flight += 1
        self.taken.append(id)


class Pacing(SqlBase):
    """Claim choices of `SqlStore` (see the module docstring)."""

    _cursor: str  # the tenant served last: claims visit tenants in turn after it

    def _candidates(
        self, cursor: Any, id: str | None, limit: int, now: float
    ) -> list[tuple[str, str, str]]:
        """Expired leases first, then due queued messages in order (each query on its index)."""
        lock = self.dialect.claim_lock
        if id is not None:
            return list(
                self._run(
                    cursor,
                    f"SELECT id, tenant, state FROM outbox_messages WHERE id = ? AND {DUE} {lock}",
                    (id, now, now),
                ).fetchall()
            )
        expired = self._run(
            cursor,
            "SELECT id, tenant, state FROM outbox_messages WHERE state = 'claimed'"
            f" AND lease_expires < ? ORDER BY lease_expires LIMIT ? {lock}",
            (now, limit),
        ).fetchall()
        # Tenants already at their connection limit are left out: else their backlog fills
        # every window of candidates and the other tenants' messages are never seen.
        full = set(self._full_tenants(cursor, now))
        visit = [t for t in self._tenant_turns(cursor, limit + 16) if t not in full]
        queues = [
            self._run(
                cursor,
                "SELECT id, tenant, state FROM outbox_messages WHERE state = 'queued' AND"
                f" tenant = ? AND not_before <= ? ORDER BY not_before, created_at LIMIT ? {lock}",
                (tenant, now, limit),
            ).fetchall()
            for tenant in visit
        ]
        # round-robin: each tenant's oldest, then each one's second oldest, …
        due = [row for turn in itertools.zip_longest(*queues) for row in turn if row is not None]
        if len(due) < limit and visit:  # every tenant visited was served in full
            self._cursor = visit[-1]
        return [*expired, *due]

    def _tenant_turns(self, cursor: Any, count: int) -> list[str]:
        """Up to `count` tenants with queued messages, in turn after the last one served
        (wrapping around); each step is one seek on the `outbox_fair` index."""
        turns = self._tenants_after(cursor, self._cursor, count)
        if len(turns) < count and self._cursor:
            turns += [t for t in self._tenants_after(cursor, "", count) if t not in turns]
        return turns[:count]

    def _tenants_after(self, cursor: Any, after: str, count: int) -> list[str]:
        next_tenant = "SELECT MIN(tenant) FROM outbox_messages WHERE state = 'queued' AND tenant >"
        return [
            str(row[0])
            for row in self._run(
                cursor,
                f"WITH RECURSIVE turn(tenant, n) AS (SELECT ({next_tenant} ?), 1 UNION ALL"
                f" SELECT ({next_tenant} turn.tenant), n + 1 FROM turn"
                " WHERE turn.tenant IS NOT NULL AND n < ?) SELECT tenant FROM turn"
                " WHERE tenant IS NOT NULL",
                (after, count),
            ).fetchall()
        ]

    def _full_tenants(self, cursor: Any, now: float) -> list[str]:
        """Tenants whose messages in flight (live leases) fill their connection limit."""
        return [
            str(row[0])
            for row in self._run(
                cursor,
                "SELECT t.tenant FROM outbox_tenants t JOIN (SELECT tenant, COUNT(*) AS busy"
                " FROM outbox_messages WHERE state = 'claimed' AND lease_expires >= ?"
                " GROUP BY tenant) m ON m.tenant = t.tenant"
                " WHERE t.in_flight IS NOT NULL AND m.busy >= t.in_flight",
                (now,),
            ).fetchall()
        ]

    def _tenants(self, cursor: Any, keys: list[str], now: float) -> dict[str, Tenant]:
        rows = self._run(
            cursor,
            "SELECT tenant, provider, per_minute, per_day, in_flight FROM outbox_tenants"
            f" WHERE tenant IN ({marks(len(keys))}) ORDER BY tenant {self.dialect.row_lock}",
            keys,
        ).fetchall()
        if not rows:
            return {}
        limited = [row[0] for row in rows]
        busy = dict(
            self._run(
                cursor,
                "SELECT tenant, COUNT(*) FROM outbox_messages WHERE state = 'claimed'"
                f" AND lease_expires >= ? AND tenant IN ({marks(len(limited))}) GROUP BY tenant",
                (now, *limited),
            ).fetchall()
        )
        # sends older than a day no longer count: prune them (the log stays ~a day long)
        self._run(
            cursor,
            f"DELETE FROM outbox_sends WHERE tenant IN ({marks(len(limited))}) AND at <= ?",
            (*limited, now - DAY),
        )
        windows = {
            tenant: (int(minute or 0), int(day))
            for tenant, minute, day in self._run(
                cursor,
                "SELECT tenant, SUM(CASE WHEN at > ? THEN 1 ELSE 0 END), COUNT(*)"
                f" FROM outbox_sends WHERE tenant IN ({marks(len(limited))}) GROUP BY tenant",
                (now - MINUTE, *limited),
            ).fetchall()
        }
        return {
            row[0]: Tenant(row, int(busy.get(row[0], 0)), *windows.get(row[0], (0, 0)))
            for row in rows
        }

    def _hold_until(
        self, cursor: Any, key: str, tenant: Tenant, now: float
    ) -> tuple[float, str] | None:
        """(not_before, reason) when `tenant`'s next message must wait: the moment the
        oldest send still in the full window leaves it and frees a slot."""
        if tenant.held is None:
            full = tenant.at_limit()
            if full is None:
                return None
            window, over, reason = full
            logged = tenant.minute if window == MINUTE else tenant.day
            logged -= len(tenant.taken)  # those taken by this claim are logged at `now`
            oldest = None
            if over < logged:
                oldest = self._run(
                    cursor,
                    "SELECT at FROM outbox_sends WHERE tenant = ? AND at > ?"
                    " ORDER BY at LIMIT 1 OFFSET ?",
                    (key, now - window, over),
                ).fetchone()
            tenant.held = (window + (now if oldest is None else float(oldest[0])), reason)
        return tenant.held

    def _hold(self, cursor: Any, held: list[tuple[float, str, float, str]]) -> None:
        for values in held:
            self._run(
                cursor,
                "UPDATE outbox_messages SET not_before = ?, wait_reason = ?, updated_at = ?"
                " WHERE id = ?",
                values,
            )

    def _log_sends(self, cursor: Any, owner: str, tenants: dict[str, Tenant], now: float) -> None:
        for key, tenant in tenants.items():
            for id in tenant.taken:
                self._run(
                    cursor,
                    "INSERT INTO outbox_sends (tenant, id, owner, at) VALUES (?, ?, ?, ?)",
                    (key, id, owner, now),
                )

    def _give_back(self, cursor: Any, ids: Sequence[str], owner: str) -> None:
        """Drop the send logged by `owner`'s claim of each of `ids` (nothing was sent).

        Only the message's newest entry, and only when this owner's claim wrote it: a
        takeover of an expired lease logs nothing, so it never drops an earlier send."""
        for id in ids:
            self._run(
                cursor,
                "DELETE FROM outbox_sends WHERE id = ? AND owner = ?"
                " AND at = (SELECT MAX(at) FROM outbox_sends WHERE id = ?)",
                (id, owner, id),
            )
