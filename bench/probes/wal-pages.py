#!/usr/bin/env python3
"""Which tables and indexes the commits in a SQLite WAL wrote.

Reads the WAL's frames from its start up to the first frame of an older
generation (its salt differs), groups them by commit (a frame whose header
gives the database's size ends one), and names each frame's page by the
B-tree it belongs to (SQLite's `dbstat`, on a copy of the database opened
with the WAL, so pages the WAL added are named too). Each commit is sorted
into a kind by the B-trees it wrote: `sweep` (the written-behind index of
keys and recipients), `accept` (the message's own B-trees and no event,
attempt or delivery), or `workers` (the rest). Prints, per kind, the
commits, their frames, and the frames per commit of each B-tree.

    python3 bench/probes/wal-pages.py DIR    # DIR holds switchboard.db and switchboard.db-wal

A snapshot taken while a scenario runs: bench/probes/wal-snapshot. Pages
that were freed and reused since a commit are named by their use now, so
read the figures as shares, not exact counts (forty-fourth session).
"""
import collections
import shutil
import sqlite3
import struct
import sys
import tempfile
from pathlib import Path

src = Path(sys.argv[1] if len(sys.argv) > 1 else "/tmp/wal-snapshot")
wal = (src / "switchboard.db-wal").read_bytes()
_, _, page_size, _, salt1, salt2, _, _ = struct.unpack(">IIIIIIII", wal[:32])
commits, frames, offset = [], [], 32
while offset + 24 + page_size <= len(wal):
    page, db_size, s1, s2, _, _ = struct.unpack(">IIIIII", wal[offset : offset + 24])
    if (s1, s2) != (salt1, salt2):
        break
    frames.append(page)
    if db_size:
        commits.append(frames)
        frames = []
    offset += 24 + page_size

with tempfile.TemporaryDirectory() as tmp:
    shutil.copy(src / "switchboard.db", Path(tmp) / "a.db")
    shutil.copy(src / "switchboard.db-wal", Path(tmp) / "a.db-wal")
    db = sqlite3.connect(Path(tmp) / "a.db")
    btree = {page: name for name, page in db.execute("SELECT name, pageno FROM dbstat")}
    db.close()


def kind(names):
    if names & {"message_keys", "message_phones"}:
        return "sweep"
    if "messages_queued" in names and not names & {"events", "attempts", "webhook_deliveries"}:
        return "accept"
    return "workers"


count, written = collections.Counter(), collections.defaultdict(collections.Counter)
for commit in commits:
    names = [btree.get(page, "?") for page in commit]
    k = kind(set(names))
    count[k] += 1
    written[k].update(names)
total = sum(map(len, commits))
print(f"{len(commits)} commits, {total} frames of {page_size} bytes")
for k, n in count.most_common():
    frames_k = sum(written[k].values())
    print(f"\n{k}: {n} commits, {frames_k / n:.1f} frames each, {100 * frames_k / total:.0f}% of the frames")
    for name, f in written[k].most_common(20):
        print(f"  {name:42} {f / n:6.2f} a commit  {100 * f / total:5.1f}%")
