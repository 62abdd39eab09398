#!/usr/bin/env python3
"""PostgreSQL backend CPU per accepted row, with and without each of the
`messages` indexes an accept writes (thirty-sixth session).

Not the product and not the benchmark: one connection inserts batches of
21 rows (accept-pg's batch at 64 connections) with the statement shape of
the product's blind insert (`messages::blind_insert_sql`: the rows as
arrays, the opt-out lookup per row) under `synchronous_commit = off`, and
reads the backend's CPU time from `/proc/<pid>/schedstat`, so it must run
on the database's machine. Each configuration starts from an empty table
and the configurations take turns, three times.

    pip install 'psycopg[binary]'
    cargo build --release -p switchboard
    bench/probes/pg-index-cost.py            # about two minutes

It makes (or reuses) the database `switchboard_probe` on
127.0.0.1:5432 and migrates it with `target/release/switchboard migrate`.
"""
import os
import random
import statistics
import subprocess
import sys
import time

import psycopg

BASE = os.environ.get("PROBE_PG", "host=127.0.0.1 user=postgres")
DB = "switchboard_probe"
ROWS = int(os.environ.get("PROBE_ROWS", "60000"))
BATCH = 21

COLS = ("id, workspace_id, to_phone, from_addr, channel, body, media_urls, encoding, segments, "
        "client_ref, metadata, category, priority, timezone, status, initial_status, provider_id, "
        "attempts, next_attempt_at, send_at, expires_at, idempotency_key, request_hash, created_at, "
        "updated_at, consent_exempt, channel_template, implied_accept")
TYPES = ["TEXT"] * 8 + ["BIGINT"] + ["TEXT"] * 3 + ["BIGINT"] + ["TEXT"] * 4 + ["BIGINT"] * 4 + \
    ["TEXT"] * 2 + ["BIGINT"] * 3 + ["TEXT", "BIGINT"]
ALIASES = ",".join(f"c{j + 1}" for j in range(len(TYPES)))
INSERT = (
    f"WITH stored AS (INSERT INTO messages ({COLS}) "
    f"SELECT * FROM unnest({', '.join(f'%s::{t}[]' for t in TYPES)}) AS k({ALIASES}) "
    "WHERE k.c26 <> 0 OR (SELECT c.state FROM contacts c WHERE c.workspace_id = k.c2 "
    "AND c.phone = k.c3 AND c.channel = k.c5) IS DISTINCT FROM 'opted_out' RETURNING 1) "
    "SELECT count(*) FROM stored"
)
CONFIGS = [
    ("every index", []),
    ("without by recipient", ["messages_by_phone"]),
    ("without by reference", ["messages_by_ref"]),
    ("without by status", ["messages_by_status"]),
    ("without the idempotency key", ["messages_idempotency_key"]),
    ("without the queue", ["messages_queued"]),
    ("without the three listings", ["messages_by_phone", "messages_by_ref", "messages_by_status"]),
    ("primary key only", ["messages_by_phone", "messages_by_ref", "messages_by_status",
                          "messages_idempotency_key", "messages_queued"]),
]
_n = [0]


def row():
    """A message as the benchmark's accept sends it, made into its row."""
    i = _n[0]
    _n[0] += 1
    now = int(time.time() * 1000)
    return [f"msg_{now:013d}{i:010d}", "ws_probe", f"+1415{i // 10000 % 1000:03d}{i % 10000:04d}",
            "+15550001111", "sms", f"Benchmark message {i}", None, "gsm7", 1, f"b{i}", None,
            "transactional", 0, None, "queued", "queued", "sim", 0, now, None, now + 86_400_000,
            f"{random.getrandbits(64):016x}-{random.getrandbits(64):016x}", "h" * 64, now, now, 0,
            None, 1]


def backend_ns(pid):
    with open(f"/proc/{pid}/schedstat") as f:
        return int(f.read().split()[0])


def cost_per_row():
    with psycopg.connect(f"{BASE} dbname={DB}", autocommit=True) as conn:
        conn.execute("SET synchronous_commit = off")
        pid = conn.execute("SELECT pg_backend_pid()").fetchone()[0]
        cur = conn.cursor()

        def batch():
            rows = [row() for _ in range(BATCH)]
            with conn.transaction():
                cur.execute(INSERT, [list(col) for col in zip(*rows)], prepare=True)

        for _ in range(20):  # past the plan's first executions
            batch()
        start, done = backend_ns(pid), 0
        while done < ROWS:
            batch()
            done += BATCH
        return (backend_ns(pid) - start) / done / 1000


def main():
    with psycopg.connect(f"{BASE} dbname=postgres", autocommit=True) as admin:
        if not admin.execute("SELECT 1 FROM pg_database WHERE datname = %s", [DB]).fetchone():
            admin.execute(f"CREATE DATABASE {DB}")
    url = "postgres://postgres@127.0.0.1:5432/" + DB
    subprocess.run(["target/release/switchboard", "migrate", "--database-url", url], check=True,
                   stdout=subprocess.DEVNULL)
    with psycopg.connect(f"{BASE} dbname={DB}", autocommit=True) as admin:
        ddl = dict(admin.execute(
            "SELECT indexname, indexdef FROM pg_indexes WHERE tablename = 'messages'").fetchall())
        found = {name: [] for name, _ in CONFIGS}
        for _ in range(3):
            for name, drop in CONFIGS:
                admin.execute("TRUNCATE messages")
                admin.execute("CHECKPOINT")
                for ix in drop:
                    admin.execute(f"DROP INDEX {ix}")
                try:
                    found[name].append(cost_per_row())
                finally:
                    for ix in drop:
                        admin.execute(ddl[ix])
                print(f"  {name}: {found[name][-1]:.1f} µs", file=sys.stderr)
        admin.execute("TRUNCATE messages")
    every = statistics.median(found[CONFIGS[0][0]])
    print(f"backend CPU per row, batches of {BATCH}, {ROWS} rows a try, median of 3 tries")
    print(f"{'configuration':32} {'µs/row':>7} {'saved':>7}  tries")
    for name, _ in CONFIGS:
        m = statistics.median(found[name])
        print(f"{name:32} {m:7.1f} {every - m:7.1f}  {', '.join(f'{x:.1f}' for x in found[name])}")


if __name__ == "__main__":
    main()
