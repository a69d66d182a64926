"""How long one fair claim takes with a big backlog (issue 14 review: fairness, pacing).

Fills an outbox with `--rows` queued messages over `--tenants` tenants (half of them
with Gmail-like limits, one tenant holding a flood of a tenth of the rows), then times
`claim(limit=12)` calls on SQLite and, when Debian's PostgreSQL is installed, on a
private PostgreSQL cluster on 127.0.0.1. `--recipients 3` gives every message 3
recipients and the limits a daily recipient count as well (500 messages or recipients,
as Gmail's); `--sends 400` logs 400 sends in the last day for each tenant with limits
first, so each claim sums full windows. Run: `PYTHONPATH=src python3 benchmarks/outbox_fairness.py`.
"""

from __future__ import annotations

import argparse
import contextlib
import statistics
import tempfile
import time
import uuid
from pathlib import Path

from mailbridge.outbox import NewMessage, Store, TenantLimits, open_store
from mailbridge.testing.realpostgres import RealPostgres, postgres_availability

T0 = 1_800_000_000.0
BODY = b"Subject: hi\r\n\r\nbody\r\n"


def fill(url: str, rows: int, tenants: int, recipients: int, sends: int) -> None:
    store = open_store(url)
    store.migrate()
    gmail = TenantLimits("Gmail", per_minute=20, per_day=500)
    if recipients > 1:
        gmail = TenantLimits("Gmail", per_minute=20, per_day=500, per_day_recipients=500)
    flood = rows // 10
    outer = store._transaction  # type: ignore[attr-defined]
    for start in range(0, rows, 5000):  # 5,000 enqueues per transaction: a quick fill
        with outer() as cursor:
            store._transaction = lambda write=True: contextlib.nullcontext(cursor)  # type: ignore[attr-defined]
            for n in range(start, min(rows, start + 5000)):
                tenant = "t0000" if n < flood else f"t{n % tenants:04d}"
                enqueue(store, n, tenant, gmail, recipients)
        store._transaction = outer  # type: ignore[attr-defined]
    with outer() as cursor:  # the sends of the last day (before T0 + 200, the first claim)
        shift = store._shift(cursor, T0 + 200)  # type: ignore[attr-defined]  # PostgreSQL's clock
        for t in range(1, tenants, 2) if sends else ():
            store._run(  # type: ignore[attr-defined]
                cursor,
                "INSERT INTO outbox_sends (tenant, id, owner, at) WITH RECURSIVE k(n) AS"
                " (SELECT 0 UNION ALL SELECT n + 1 FROM k WHERE n < ?)"
                " SELECT ?, ? || CAST(n AS TEXT), 'w', ? + n * 200.0 FROM k",
                (sends - 1, f"t{t:04d}", f"s{t}-", T0 + 200 - 86_000 + shift),
            )
    store.close()


def enqueue(store: Store, n: int, tenant: str, gmail: TenantLimits, recipients: int) -> None:
    store.enqueue(
        NewMessage(
            id=uuid.uuid4().hex,
            tenant=tenant,
            idempotency_key=None,
            message_id=f"<{n}@bench.example>",
            envelope_sender="a@bench.example",
            recipients=tuple(f"b{r}@bench.example" for r in range(recipients)),
            bcc=(),
            smtputf8=False,
            mode="own_smtp",
            note=None,
            data=BODY,
            created_at=T0 + n / 1000,
            not_before=T0 + n / 1000,
            deadline=T0 + 86_400,
            limits=gmail if n % 2 else None,
        )
    )


def time_claims(url: str, claims: int) -> list[float]:
    store = open_store(url)
    took = []
    for n in range(claims):
        start = time.perf_counter()
        claimed = store.claim(f"w{n % 4}", limit=12, lease=60, now=T0 + 200 + n)
        took.append(time.perf_counter() - start)
        assert claimed, "the backlog ran dry"
    store.close()
    return took


def report(name: str, took: list[float], rows: int, tenants: int) -> None:
    print(
        f"{name}: {rows} queued over {tenants} tenants, claim(limit=12): median"
        f" {statistics.median(took) * 1000:.1f} ms, max {max(took) * 1000:.1f} ms"
        f" ({len(took)} claims)"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--tenants", type=int, default=1000)
    parser.add_argument("--claims", type=int, default=50)
    parser.add_argument("--recipients", type=int, default=1, help="recipients per message")
    parser.add_argument("--sends", type=int, default=0, help="sends logged per limited tenant")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as directory:
        url = f"sqlite:///{Path(directory) / 'outbox.db'}"
        fill(url, args.rows, args.tenants, args.recipients, args.sends)
        report("SQLite", time_claims(url, args.claims), args.rows, args.tenants)
    available, reason = postgres_availability()
    if not available:
        print(f"PostgreSQL: skipped ({reason})")
        return
    with tempfile.TemporaryDirectory() as directory, RealPostgres(Path(directory)) as cluster:
        url = cluster.url(cluster.create_database())
        fill(url, args.rows, args.tenants, args.recipients, args.sends)
        report("PostgreSQL", time_claims(url, args.claims), args.rows, args.tenants)


if __name__ == "__main__":
    main()
