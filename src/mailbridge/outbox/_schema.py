"""The outbox schema and its migrations, written once for every SQL dialect.

`{blob}` and `{real}` are the dialect's types for bytes and float seconds, and
`{recipient_count}` its expression for how many addresses a message's `recipients`
(a JSON array) holds; all other columns are TEXT or INTEGER in both SQLite and
PostgreSQL. The message bytes live in their own table, `outbox_bodies`, written once:
changing a message's state then never rewrites its bytes (SQLite would copy them into
the WAL on every update).
"""

from __future__ import annotations

__all__ = ["MIGRATIONS", "SCHEMA_VERSION"]

_V1 = (
    """CREATE TABLE IF NOT EXISTS outbox_messages (
        id TEXT PRIMARY KEY,
        tenant TEXT NOT NULL,
        idempotency_key TEXT,
        state TEXT NOT NULL,
        message_id TEXT NOT NULL,
        envelope_sender TEXT NOT NULL,
        recipients TEXT NOT NULL,
        bcc TEXT NOT NULL,
        smtputf8 INTEGER NOT NULL,
        mode TEXT NOT NULL,
        note TEXT,
        size INTEGER NOT NULL,
        attempts INTEGER NOT NULL DEFAULT 0,
        created_at {real} NOT NULL,
        updated_at {real} NOT NULL,
        not_before {real} NOT NULL,
        deadline {real} NOT NULL,
        wait_reason TEXT,
        sent_at {real},
        lease_owner TEXT,
        lease_expires {real},
        result TEXT,
        error TEXT,
        UNIQUE (tenant, idempotency_key)
    )""",
    """CREATE TABLE IF NOT EXISTS outbox_bodies (
        id TEXT PRIMARY KEY,
        data {blob} NOT NULL
    )""",
    "CREATE INDEX IF NOT EXISTS outbox_due ON outbox_messages (state, not_before, created_at)",
    "CREATE INDEX IF NOT EXISTS outbox_lease ON outbox_messages (state, lease_expires)",
    "CREATE INDEX IF NOT EXISTS outbox_tenant ON outbox_messages (tenant, state)",
    "CREATE INDEX IF NOT EXISTS outbox_updated ON outbox_messages (state, updated_at)",
    """CREATE TABLE IF NOT EXISTS outbox_tenants (
        tenant TEXT PRIMARY KEY,
        provider TEXT NOT NULL,
        per_minute INTEGER,
        per_day INTEGER,
        in_flight INTEGER,
        minute_start {real} NOT NULL DEFAULT 0,
        minute_count INTEGER NOT NULL DEFAULT 0,
        day_start {real} NOT NULL DEFAULT 0,
        day_count INTEGER NOT NULL DEFAULT 0
    )""",
)

# Version 2: the DSN envelope id (RFC 3461 ENVID) travels with the message, and what
# bounces later say per recipient is kept (`outbox_bounces`); `delivery` on the message
# is the worst of them ("bounced" before "delayed"), so a UI can list bounced messages.
_V2 = (
    "ALTER TABLE outbox_messages ADD COLUMN envelope_id TEXT",
    "ALTER TABLE outbox_messages ADD COLUMN verp_token TEXT",
    "ALTER TABLE outbox_messages ADD COLUMN delivery TEXT",
    "CREATE INDEX IF NOT EXISTS outbox_envelope_id ON outbox_messages (envelope_id)",
    "CREATE INDEX IF NOT EXISTS outbox_message_id ON outbox_messages (message_id)",
    "CREATE INDEX IF NOT EXISTS outbox_verp ON outbox_messages (verp_token)",
    "CREATE INDEX IF NOT EXISTS outbox_delivery ON outbox_messages (delivery, created_at)",
    """CREATE TABLE IF NOT EXISTS outbox_bounces (
        id TEXT NOT NULL,
        recipient TEXT NOT NULL,
        action TEXT NOT NULL,
        status TEXT,
        reason TEXT NOT NULL,
        diagnostic TEXT NOT NULL,
        kind TEXT NOT NULL,
        matched_by TEXT NOT NULL,
        reported_at {real} NOT NULL,
        PRIMARY KEY (id, recipient)
    )""",
)

# Version 3: pacing over sliding windows. Each claim that may send counts as one row of
# `outbox_sends` (tenant, message, claim time); a tenant's limits hold over any window of
# a minute / a day (the rows are pruned once a day old, so a Gmail tenant keeps at most
# ~500 of them). The fixed-window counters of `outbox_tenants` are no longer used. What
# v2 databases sent (or were sending) during their last day is copied in, so an upgrade
# never undercounts. `outbox_fair` lets a claim visit tenants in turn (fairness).
_V3 = (
    """CREATE TABLE IF NOT EXISTS outbox_sends (
        tenant TEXT NOT NULL,
        id TEXT NOT NULL,
        owner TEXT NOT NULL,
        at {real} NOT NULL
    )""",
    "CREATE INDEX IF NOT EXISTS outbox_sends_window ON outbox_sends (tenant, at)",
    "CREATE INDEX IF NOT EXISTS outbox_sends_message ON outbox_sends (id, at)",
    "CREATE INDEX IF NOT EXISTS outbox_fair"
    " ON outbox_messages (state, tenant, not_before, created_at)",
    """INSERT INTO outbox_sends (tenant, id, owner, at)
        SELECT m.tenant, m.id, COALESCE(m.lease_owner, ''), COALESCE(m.sent_at, m.updated_at)
        FROM outbox_messages m JOIN outbox_tenants t ON t.tenant = m.tenant
        WHERE m.state IN ('claimed', 'sent', 'outcome_unknown', 'failed')
        AND COALESCE(m.sent_at, m.updated_at)
            > (SELECT MAX(updated_at) FROM outbox_messages) - 86400""",
)

# Version 4: limits that count recipients (Microsoft 365: 10,000 recipients a day). Each
# send records its message's recipient count (sends logged by v3 get theirs from the
# message, 1 when it was purged), and the tenants keep the two recipient limits. The
# window index covers the count, so summing a window reads the index only.
_V4 = (
    "ALTER TABLE outbox_tenants ADD COLUMN per_minute_recipients INTEGER",
    "ALTER TABLE outbox_tenants ADD COLUMN per_day_recipients INTEGER",
    "ALTER TABLE outbox_sends ADD COLUMN recipients INTEGER NOT NULL DEFAULT 1",
    """UPDATE outbox_sends SET recipients = COALESCE((SELECT {recipient_count}
        FROM outbox_messages m WHERE m.id = outbox_sends.id), 1)""",
    "DROP INDEX IF EXISTS outbox_sends_window",
    "CREATE INDEX IF NOT EXISTS outbox_sends_use ON outbox_sends (tenant, at, recipients)",
)

MIGRATIONS: tuple[tuple[str, ...], ...] = (_V1, _V2, _V3, _V4)
"""Statements that bring the schema from version N to N + 1, in order."""

SCHEMA_VERSION = len(MIGRATIONS)
