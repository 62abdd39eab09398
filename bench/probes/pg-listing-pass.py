#!/usr/bin/env python3
"""The listing pass of a written-behind design for PostgreSQL, run beside
the server by `pg-drop-indexes` (`SB_PROBE_PASS=<seconds>`; thirty-sixth
session). Not the product and not a correct listing: every period it
copies the messages accepted since its last pass (by id, so a message
that commits late with a lower id is missed) into `message_phones` and
`message_refs`, tables keyed by (workspace, recipient or reference, id),
in key order, on a connection of its own. It measures what such a pass
costs the accepts beside it, not what readers would see.

    pg-listing-pass.py <url> <schema> <seconds> <server pid>

It stops when the server's process is gone. Needs `psycopg`
(`pip install 'psycopg[binary]'`).
"""
import os
import sys
import time

import psycopg


def main():
    url, schema, period, server = sys.argv[1], sys.argv[2], float(sys.argv[3]), int(sys.argv[4])
    conn = psycopg.connect(url, autocommit=True)
    conn.execute(f"SET search_path = {schema}")
    conn.execute("SET synchronous_commit = off")
    for table, column in (("message_phones", "to_phone"), ("message_refs", "client_ref")):
        conn.execute(
            f'CREATE TABLE IF NOT EXISTS {table} (workspace_id TEXT COLLATE "C", {column} TEXT COLLATE "C", '
            f'message_id TEXT COLLATE "C", PRIMARY KEY (workspace_id, {column}, message_id))')
    last, passes = "", 0
    while True:
        try:
            os.kill(server, 0)
        except OSError:
            break
        started = time.monotonic()
        try:
            with conn.transaction():
                newest = conn.execute("SELECT max(id) FROM messages").fetchone()[0]
                if newest and newest > last:
                    conn.execute(
                        "INSERT INTO message_phones SELECT workspace_id, to_phone, id FROM messages "
                        "WHERE id > %s AND id <= %s ORDER BY 1, 2, 3 ON CONFLICT DO NOTHING", [last, newest])
                    conn.execute(
                        "INSERT INTO message_refs SELECT workspace_id, client_ref, id FROM messages "
                        "WHERE id > %s AND id <= %s AND client_ref IS NOT NULL ORDER BY 1, 2, 3 "
                        "ON CONFLICT DO NOTHING", [last, newest])
                    last = newest
                    passes += 1
        except psycopg.Error as e:  # the schema dropped at the scenario's end
            print(f"pass: {e}", file=sys.stderr)
            break
        time.sleep(max(0.0, period - (time.monotonic() - started)))
    print(f"{passes} passes", file=sys.stderr)


if __name__ == "__main__":
    main()
