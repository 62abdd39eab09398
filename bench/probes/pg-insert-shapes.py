#!/usr/bin/env python3
"""PostgreSQL backend CPU per accepted row for the shapes an accept batch's
insert can take (thirty-seventh session).

Not the product and not the benchmark: one connection inserts batches of
21 rows (accept-pg's batch at 64 connections) into the product's schema
with every index, under `synchronous_commit = off`, and reads the
backend's CPU time from `/proc/<pid>/schedstat`, so it must run on the
database's machine. Every value is sent in the binary format, as
tokio-postgres sends it. The shapes take turns, three times, each from an
empty table:

    arrays        28 arrays unnested (`RowSet::new`), the blind insert's
                  opt-out lookup per row and its count check
    arrays-plain  the same arrays, a plain insert
    typed         one array of `message_row` (`RowSet::typed`), the blind
                  insert as the product sends it
    typed-plain   the same array, a plain insert
    copy          COPY … FROM STDIN (FORMAT binary), no check

    pip install 'psycopg[binary]'
    cargo build --release -p switchboard
    bench/probes/pg-insert-shapes.py [shape …]     # about two minutes

It makes (or reuses) the database `switchboard_probe` on 127.0.0.1:5432
and migrates it with `target/release/switchboard migrate`.
"""
import importlib.util
import os
import statistics
import struct
import subprocess
import sys

import psycopg

HERE = os.path.dirname(os.path.abspath(__file__))
spec = importlib.util.spec_from_file_location("index_cost", os.path.join(HERE, "pg-index-cost.py"))
ic = importlib.util.module_from_spec(spec)
spec.loader.exec_module(ic)  # the row, its columns and types, the backend's clock

ROWS = int(os.environ.get("PROBE_ROWS", "40000"))
BATCH = 21
CHECK = ("WHERE k.{exempt} <> 0 OR (SELECT c.state FROM contacts c WHERE c.workspace_id = k.{ws} "
         "AND c.phone = k.{to} AND c.channel = k.{ch}) IS DISTINCT FROM 'opted_out'")
ARRAYS = f"SELECT * FROM unnest({', '.join(f'%b::{t}[]' for t in ic.TYPES)}) AS k({ic.ALIASES})"
TYPED = "SELECT * FROM unnest(%b::message_row[]) AS k"
INSERT = f"INSERT INTO messages ({ic.COLS}) "
SHAPES = {
    "arrays": f"WITH stored AS ({INSERT}{ARRAYS} "
              + CHECK.format(exempt="c26", ws="c2", to="c3", ch="c5")
              + " RETURNING 1) SELECT count(*) FROM stored",
    "arrays-plain": INSERT + ARRAYS,
    "typed": f"WITH stored AS ({INSERT}{TYPED} "
             + CHECK.format(exempt="consent_exempt", ws="workspace_id", to="to_phone", ch="channel")
             + " RETURNING 1) SELECT count(*) FROM stored",
    "typed-plain": INSERT + TYPED,
    "copy": None,
}


class Rows:
    """A batch bound as one array of `message_row`."""

    def __init__(self, rows):
        self.rows = rows


def record_dumper(conn):
    """A binary dumper of `Rows` as `message_row[]` (psycopg has none for
    composites): the array's header, then each record's fields with their
    type, length and value (`record_recv`)."""
    oid, array_oid = conn.execute(
        "SELECT oid, typarray FROM pg_type WHERE typname = 'message_row'").fetchone()

    class Dumper(psycopg.adapt.Dumper):
        format = psycopg.pq.Format.BINARY

        def __init__(self, cls, context=None):
            super().__init__(cls, context)
            self.oid = array_oid

        def dump(self, obj):
            out = [struct.pack("!iiIii", 1, 0, oid, len(obj.rows), 1)]
            for row in obj.rows:
                fields = [struct.pack("!i", len(row))]
                for v, t in zip(row, ic.TYPES):
                    ty = 25 if t == "TEXT" else 20
                    if v is None:
                        fields.append(struct.pack("!Ii", ty, -1))
                    elif t == "TEXT":
                        b = v.encode()
                        fields.append(struct.pack("!Ii", ty, len(b)) + b)
                    else:
                        fields.append(struct.pack("!Iiq", ty, 8, v))
                body = b"".join(fields)
                out.append(struct.pack("!i", len(body)) + body)
            return b"".join(out)

    conn.adapters.register_dumper(Rows, Dumper)


def cost_per_row(shape):
    with psycopg.connect(f"{ic.BASE} dbname={ic.DB}", autocommit=True) as conn:
        conn.execute("SET synchronous_commit = off")
        record_dumper(conn)
        pid = conn.execute("SELECT pg_backend_pid()").fetchone()[0]
        cur = conn.cursor()

        def batch():
            rows = [ic.row() for _ in range(BATCH)]
            with conn.transaction():
                if shape == "copy":
                    with cur.copy(f"COPY messages ({ic.COLS}) FROM STDIN (FORMAT BINARY)") as cp:
                        cp.set_types(["text" if t == "TEXT" else "int8" for t in ic.TYPES])
                        for r in rows:
                            cp.write_row(r)
                elif shape.startswith("typed"):
                    cur.execute(SHAPES[shape], [Rows(rows)], prepare=True)
                else:
                    cur.execute(SHAPES[shape], [list(col) for col in zip(*rows)], prepare=True)

        for _ in range(20):  # past the plan's first executions
            batch()
        start, done = ic.backend_ns(pid), 0
        while done < ROWS:
            batch()
            done += BATCH
        return (ic.backend_ns(pid) - start) / done / 1000


def main():
    shapes = sys.argv[1:] or list(SHAPES)
    with psycopg.connect(f"{ic.BASE} dbname=postgres", autocommit=True) as admin:
        if not admin.execute("SELECT 1 FROM pg_database WHERE datname = %s", [ic.DB]).fetchone():
            admin.execute(f"CREATE DATABASE {ic.DB}")
    subprocess.run(["target/release/switchboard", "migrate", "--database-url",
                    "postgres://postgres@127.0.0.1:5432/" + ic.DB], check=True, stdout=subprocess.DEVNULL)
    found = {s: [] for s in shapes}
    with psycopg.connect(f"{ic.BASE} dbname={ic.DB}", autocommit=True) as admin:
        for _ in range(3):
            for s in shapes:
                admin.execute("TRUNCATE messages")
                admin.execute("CHECKPOINT")
                found[s].append(cost_per_row(s))
                print(f"  {s}: {found[s][-1]:.1f} µs", file=sys.stderr)
        admin.execute("TRUNCATE messages")
    print(f"backend CPU per row, batches of {BATCH}, {ROWS} rows a try, median of 3 tries")
    print(f"{'shape':14} {'µs/row':>7}  tries")
    for s in shapes:
        print(f"{s:14} {statistics.median(found[s]):7.1f}  {', '.join(f'{x:.1f}' for x in found[s])}")


if __name__ == "__main__":
    main()
