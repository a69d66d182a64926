"""Which messages a claim takes: fair turns over tenants and per-tenant pacing.

`Pacing` is the part of `SqlStore` that chooses: expired leases first, then due
messages round-robin over the tenants with queued messages (oldest first within a
tenant, each step one seek on the `outbox_fair` index), leaving out tenants at their
connection limit, and holding back a tenant whose sliding per-minute or per-day window
(`outbox_sends`) has no room for its next message until enough sends in it leave.

A limit counts messages (`per_minute`, `per_day`) or recipients (`per_minute_recipients`,
`per_day_recipients`: a message to 3 addresses uses 3); a window may have both, and each
send's row keeps its recipient count.
"""

from __future__ import annotations

import itertools
import json
from collections.abc import Sequence
from typing import Any

from ._sql_base import SqlBase, marks
from ._store import TenantLimits

__all__ = ["DAY", "DUE", "LIMITS", "MINUTE", "WAITING", "Pacing", "Tenant", "recipient_count"]

MINUTE = 60.0
DAY = 86_400.0
# Every limit: its window, whether it counts recipients (else messages), its column.
LIMITS = (
    (DAY, False, "per_day"),
    (DAY, True, "per_day_recipients"),
    (MINUTE, False, "per_minute"),
    (MINUTE, True, "per_minute_recipients"),
)
_NAMES = [column for _, _, column in LIMITS]
_COLUMNS = ", ".join(_NAMES)
WAITING = "waiting: "  # how the reason of a message held back by a limit begins
DUE = "((state = 'queued' AND not_before <= ?) OR (state = 'claimed' AND lease_expires < ?))"


class Tenant:
    """A tenant's limits and its sends in the sliding windows, inside one claim transaction.

    `used[column]` is what the sends logged in `outbox_sends` during the limit's window
    (a minute, a day) use of it — messages or recipients — plus what this claim takes
    (`taken_use[column]`); `over()` says which limits the next message would exceed.
    """

    def __init__(self, values: Sequence[Any], in_flight: int, used: Sequence[int]) -> None:
        (_, self.provider, self.max_in_flight, *limits) = values
        self.limits = {c: int(n) for c, n in zip(_NAMES, limits, strict=True) if n is not None}
        self.used = {c: int(n or 0) for c, n in zip(_NAMES, used, strict=True)}
        self.taken_use = dict.fromkeys(self.used, 0)
        self.in_flight = in_flight
        self.taken: list[tuple[str, int]] = []  # (message id, its recipients)
        self.held: tuple[float, str] | None = None  # once full, for the rest of the claim
        self.held_from = 0.0  # messages enqueued since (created_at) wait while it holds
        self.behind: tuple[float, float, str] | None = None  # (created_at, until, reason)

    def over(self, recipients: int) -> list[tuple[float, bool, int, str]]:
        """(window, counts recipients, excess, reason) of each limit a message to
        `recipients` addresses would exceed; `excess` is how much of the limit's use must
        leave its window first.

        A message bigger than a whole window (refused at enqueue; possible only when the
        provider's figures shrank since) goes once its window is empty: it never waits
        forever.
        """
        found = []
        for window, per_recipient, column in LIMITS:
            if column not in self.limits:
                continue
            used = self.used[column]
            excess = used + (recipients if per_recipient else 1) - self.limits[column]
            if excess > 0 and used > 0:
                name = "daily" if window == DAY else "per-minute"
                kind = " recipient" if per_recipient else ""
                reason = f"{WAITING}{self.provider} {name}{kind} limit"
                found.append((window, per_recipient, min(excess, used), reason))
        return found

    def full(self) -> bool:
        return self.max_in_flight is not None and self.in_flight >= self.max_in_flight

    def take(self, id: str, recipients: int) -> None:
        for _, per_recipient, column in LIMITS:
            use = recipients if per_recipient else 1
            self.used[column] += use
            self.taken_use[column] += use
        self.in_flight += 1
        self.taken.append((id, recipients))


def recipient_count(recipients_json: str) -> int:
    """How many envelope recipients the `recipients` column (a JSON array) holds."""
    return len(json.loads(recipients_json))


class Pacing(SqlBase):
    """Claim choices of `SqlStore` (see the module docstring)."""

    _cursor: str  # the tenant served last: claims visit tenants in turn after it

    def _candidates(
        self, cursor: Any, id: str | None, limit: int, now: float
    ) -> list[tuple[str, str, str, str, float]]:
        """Expired leases first, then due queued messages in order (each query on its index):
        (id, tenant, state, recipients as JSON, created_at)."""
        lock = self.dialect.claim_lock
        if id is not None:
            return list(
                self._run(
                    cursor,
                    "SELECT id, tenant, state, recipients, created_at FROM outbox_messages"
                    f" WHERE id = ? AND {DUE} {lock}",
                    (id, now, now),
                ).fetchall()
            )
        expired = self._run(
            cursor,
            "SELECT id, tenant, state, recipients, created_at FROM outbox_messages"
            " WHERE state = 'claimed'"
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
                "SELECT id, tenant, state, recipients, created_at FROM outbox_messages"
                " WHERE state = 'queued' AND tenant = ? AND not_before <= ?"
                f" ORDER BY not_before, created_at LIMIT ? {lock}",
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
            f"SELECT tenant, provider, in_flight, {_COLUMNS} FROM outbox_tenants"
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
        # messages and recipients of the day, then of the minute: a range on the index
        day, minute = (
            {
                tenant: (messages, recipients)
                for tenant, messages, recipients in self._run(
                    cursor,
                    "SELECT tenant, COUNT(*), SUM(recipients) FROM outbox_sends"
                    f" WHERE tenant IN ({marks(len(limited))}) AND at > ? GROUP BY tenant",
                    (*limited, since),
                ).fetchall()
            }
            for since in (now - DAY, now - MINUTE)
        )
        tenants = {
            row[0]: Tenant(
                row,
                int(busy.get(row[0], 0)),
                (*day.get(row[0], (0, 0)), *minute.get(row[0], (0, 0))),
            )
            for row in rows
        }
        for key, tenant in tenants.items():
            tenant.behind = self._held_back(cursor, key, now)
        return tenants

    def _held_back(self, cursor: Any, key: str, now: float) -> tuple[float, float, str] | None:
        """(created_at, not_before, reason) of the message of `key` a limit holds back the
        soonest, if any: the messages enqueued after it wait behind it (one seek on
        `outbox_fair`)."""
        found = self._run(
            cursor,
            "SELECT created_at, not_before, wait_reason FROM outbox_messages"
            " WHERE state = 'queued' AND tenant = ? AND not_before > ? AND wait_reason LIKE ?"
            " ORDER BY not_before, created_at LIMIT 1",
            (key, now, WAITING + "%"),
        ).fetchone()
        return None if found is None else (float(found[0]), float(found[1]), str(found[2]))

    def _hold_until(  # noqa: PLR0917 (one internal call shape)
        self, cursor: Any, key: str, tenant: Tenant, recipients: int, created: float, now: float
    ) -> tuple[float, str] | None:
        """(not_before, reason) when `tenant`'s next message (to `recipients` addresses)
        must wait: the moment enough of the sends in its fullest window have left it.

        Once one message of the tenant waits, the rest of its messages wait as well, in
        this claim and in later ones (`_held_back`) until it goes: a stream of small
        messages never overtakes a big one."""
        if tenant.held is None and tenant.behind is not None and created >= tenant.behind[0]:
            tenant.held_from, until, reason = tenant.behind
            tenant.held = (until, reason)
        if tenant.held is None:
            tenant.held_from = created
            waits = [
                self._room_at(cursor, key, tenant, limit, now) for limit in tenant.over(recipients)
            ]
            if not waits:
                return None
            tenant.held = max(waits)
        return tenant.held

    def _room_at(
        self, cursor: Any, key: str, tenant: Tenant, limit: tuple[float, bool, int, str], now: float
    ) -> tuple[float, str]:
        """When `excess` of a limit's use has left its window: the oldest sends leave first
        (a send uses 1 of a message limit, its recipients of a recipient limit)."""
        window, per_recipient, excess, reason = limit
        column = next(c for w, r, c in LIMITS if (w, r) == (window, per_recipient))
        # what this claim took is logged at `now`: it leaves the window last
        logged = tenant.used[column] - tenant.taken_use[column]
        oldest = None
        if excess <= logged:
            use = "recipients" if per_recipient else "1"
            oldest = self._run(
                cursor,
                f"SELECT at FROM (SELECT at, SUM({use}) OVER (ORDER BY at ROWS UNBOUNDED"
                " PRECEDING) AS gone FROM outbox_sends WHERE tenant = ? AND at > ?) sends"
                " WHERE gone >= ? ORDER BY at LIMIT 1",
                (key, now - window, excess),
            ).fetchone()
        return window + (now if oldest is None else float(oldest[0])), reason

    def _save_limits(self, cursor: Any, tenant: str, limits: TenantLimits, now: float) -> None:
        """Keep `tenant`'s limits (the newest enqueue's) for the claims to enforce; limits
        without a figure remove them (the tenant moved to a provider without any).

        When they change, the messages the old ones held back are due again, to be judged
        by the new ones (a bigger plan need not wait for tomorrow)."""
        values = [getattr(limits, column) for _, _, column in LIMITS]
        old = self._run(
            cursor,
            f"SELECT provider, in_flight, {_COLUMNS} FROM outbox_tenants WHERE tenant = ?"
            f" {self.dialect.row_lock}",
            (tenant,),
        ).fetchone()
        if old is not None and tuple(old) != (limits.provider, limits.in_flight, *values):
            self._run(  # rows a claim has locked: it judges them by the new limits
                cursor,
                "UPDATE outbox_messages SET not_before = ?, wait_reason = NULL, updated_at = ?"
                " WHERE id IN (SELECT id FROM outbox_messages WHERE state = 'queued'"
                " AND tenant = ? AND not_before > ? AND wait_reason LIKE ?"
                f" {self.dialect.claim_lock})",
                (now, now, tenant, now, WAITING + "%"),
            )
        if limits.in_flight is None and all(value is None for value in values):
            self._run(cursor, "DELETE FROM outbox_tenants WHERE tenant = ?", (tenant,))
            return
        updates = ", ".join(f"{c} = excluded.{c}" for c in ("provider", "in_flight", *_NAMES))
        self._run(
            cursor,
            f"INSERT INTO outbox_tenants (tenant, provider, in_flight, {_COLUMNS})"
            f" VALUES ({marks(3 + len(LIMITS))}) ON CONFLICT (tenant) DO UPDATE SET {updates}",
            (tenant, limits.provider, limits.in_flight, *values),
        )

    def _hold(self, cursor: Any, tenants: dict[str, Tenant], now: float) -> None:
        """Hold back every queued message of each held tenant enqueued since its held
        message that would be due before it: at that moment they are all due at once,
        in the order they were enqueued, so none has overtaken it."""
        for key, tenant in tenants.items():
            if tenant.held is not None:
                until, reason = tenant.held
                # rows another claim has locked are its own to take or hold (it sees this
                # hold once it has the tenant's row): waiting for them could deadlock
                self._run(
                    cursor,
                    "UPDATE outbox_messages SET not_before = ?, wait_reason = ?, updated_at = ?"
                    " WHERE id IN (SELECT id FROM outbox_messages WHERE state = 'queued'"
                    " AND tenant = ? AND not_before < ? AND created_at >= ?"
                    f" {self.dialect.claim_lock})",
                    (until, reason, now, key, until, tenant.held_from),
                )

    def _log_sends(self, cursor: Any, owner: str, tenants: dict[str, Tenant], now: float) -> None:
        for key, tenant in tenants.items():
            for id, recipients in tenant.taken:
                self._run(
                    cursor,
                    "INSERT INTO outbox_sends (tenant, id, owner, at, recipients)"
                    " VALUES (?, ?, ?, ?, ?)",
                    (key, id, owner, now, recipients),
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
