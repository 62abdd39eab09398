#!/usr/bin/env python3
"""How long a /metrics scrape takes on a large SQLite database.

Fills a fresh data directory with MESSAGES messages (90% delivered, the
rest failed, sent, undelivered and queued, the queued ones not due for
years), starts `switchboard serve` on it, scrapes /metrics SCRAPES times
a second apart, and prints each scrape's time with the counts it gave and
how old it said they were. Give it one binary, or two (`--baseline`) to
compare: each runs on its own copy of the same database.

    python3 bench/probes/metrics-scrape.py --messages 2000000 target/release/switchboard

Loopback only; the server is stopped at the end. About 20 s to fill
2,000,000 messages (1 GB).
"""

import argparse
import os
import random
import shutil
import socket
import sqlite3
import subprocess
import sys
import tempfile
import time
import urllib.request


def fill(binary, data, messages):
    subprocess.run([binary, "migrate", "--data-dir", data], check=True, capture_output=True)
    db = sqlite3.connect(os.path.join(data, "switchboard.db"))
    statuses = ["delivered"] * 90 + ["failed"] * 4 + ["sent"] * 3 + ["undelivered"] * 2 + ["queued"]
    rng = random.Random(46)

    def rows():
        for i in range(messages):
            status = rng.choice(statuses)
            yield (
                f"msg_{i:026d}", f"ws_{i % 3:026d}", f"+1415555{i % 10000:04d}", "sms",
                "hello there, your code is 123456", "gsm7", 1, f"ref{i}", "transactional", 0,
                status, "queued", 4_000_000_000_000 if status == "queued" else None,
                4_000_000_000_000, "h" * 64, 1_700_000_000_000 + i, 1_700_000_000_000 + i,
            )

    db.executemany(
        "INSERT INTO messages (id, workspace_id, to_phone, channel, body, encoding, segments,"
        " client_ref, category, priority, status, initial_status, next_attempt_at, expires_at,"
        " request_hash, created_at, updated_at) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
        rows(),
    )
    db.commit()
    db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    db.close()


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def scrape(url):
    began = time.perf_counter()
    text = urllib.request.urlopen(url, timeout=120).read().decode()
    took = time.perf_counter() - began
    series = {}
    for line in text.splitlines():
        if line.startswith("switchboard_messages{") or line.startswith(
            ("switchboard_messages_counted_age_seconds ", "switchboard_queue_depth ")
        ):
            name, value = line.rsplit(" ", 1)
            series[name] = value
    return took, series


def run(binary, data, scrapes):
    port = free_port()
    server = subprocess.Popen(
        [binary, "serve", "--data-dir", data, "--listen", f"127.0.0.1:{port}"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}/metrics"
    try:
        deadline = time.time() + 60
        while True:
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=5).read()
                break
            except OSError:
                if time.time() > deadline:
                    sys.exit(f"{binary} did not start")
                time.sleep(0.1)
        out = []
        for _ in range(scrapes):
            out.append(scrape(url))
            time.sleep(1)
        return out
    finally:
        server.terminate()
        server.wait(timeout=60)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[1])
    ap.add_argument("binary")
    ap.add_argument("--baseline", help="a second binary, run on a copy of the same database")
    ap.add_argument("--messages", type=int, default=2_000_000)
    ap.add_argument("--scrapes", type=int, default=12)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="metrics-scrape-") as tmp:
        data = os.path.join(tmp, "data")
        began = time.time()
        fill(args.binary, data, args.messages)
        print(f"{args.messages} messages written in {time.time() - began:.0f} s")
        runs = [("binary", args.binary)]
        if args.baseline:
            runs.append(("baseline", args.baseline))
        for label, binary in runs:
            copy = os.path.join(tmp, label)
            shutil.copytree(data, copy)
            print(f"\n{label}: {binary}")
            print(f"{'scrape':>6} {'ms':>9} {'delivered':>10} {'queued':>7} {'age s':>7}")
            delivered = 'switchboard_messages{status="delivered"}'
            queued = 'switchboard_messages{status="queued"}'
            age = "switchboard_messages_counted_age_seconds"
            for n, (took, s) in enumerate(run(binary, copy, args.scrapes), 1):
                print(
                    f"{n:>6} {took * 1000:>9.1f} {s.get(delivered, '-'):>10} "
                    f"{s.get(queued, '-'):>7} {s.get(age, '-'):>7}"
                )
            shutil.rmtree(copy)


if __name__ == "__main__":
    main()
