#!/usr/bin/env python3
"""The payouts app: one replica of three, beside its own leaderd.

While its leaderd says `is_leader`, it pays the next batch: one payout per merchant and the
payout pointer moved from N to N+1, in one PostgreSQL transaction that carries leaderd's epoch
(and lease_uid). The database refuses a write whose epoch is lower than the one the pointer row
already holds ("42 beats 41"), so a deposed leader that was paused after its check cannot pay a
batch twice or move the pointer back.

Environment:
  PAYOUTS_REPLICA      this replica's name (r1, r2, ...), recorded with every write
  PAYOUTS_LEADER_URL   its leaderd's /leader, e.g. http://127.0.0.1:4040/leader
  PAYOUTS_DSN          libpq connection string of the database (schema.sql loaded)
  PAYOUTS_FENCING      1 (default): the epoch condition is on; 0: skipped (the control case)
  PAYOUTS_INTERVAL     seconds between batches (default 0.1)
  PAYOUTS_FAULT_DIR    demo only: if the file freeze-<replica> appears there, the app removes it
                       and stops itself with SIGSTOP right before its next write (see maybe_freeze)

Run by run.sh; stops on SIGTERM.
"""

import json
import os
import signal
import sys
import time
import urllib.request

import psycopg

REPLICA = os.environ.get("PAYOUTS_REPLICA", "r?")
LEADER_URL = os.environ.get("PAYOUTS_LEADER_URL", "http://127.0.0.1:4040/leader")
DSN = os.environ.get("PAYOUTS_DSN", "")
FENCING = os.environ.get("PAYOUTS_FENCING", "1") != "0"
INTERVAL = float(os.environ.get("PAYOUTS_INTERVAL", "0.1"))
FAULT_DIR = os.environ.get("PAYOUTS_FAULT_DIR")
MERCHANTS = ("m-ana", "m-bo", "m-cy")


def log(msg):
    print(f"[app {REPLICA} {time.strftime('%H:%M:%S')}] {msg}", flush=True)


# --- pattern: begin (quoted in docs/clients.md; run.sh checks the copy there is identical)
MARGIN_S = 0.2  # finish well inside valid_for_ms: our own clock, HTTP and DB latency


def read_leader(url):
    """leaderd's answer and the monotonic deadline of our claim, or None if we may not lead."""
    started = time.monotonic()  # the deadline counts from before the request: conservative
    try:
        with urllib.request.urlopen(url, timeout=0.5) as resp:
            doc = json.load(resp)
    except (OSError, ValueError):
        return None  # no answer from leaderd means "not leader"
    if not doc.get("is_leader"):
        return None
    return doc, started + doc["valid_for_ms"] / 1000 - MARGIN_S


# Claim: raise the pointer's fence to our epoch and read pos. No row: a newer epoch has
# written it, we are deposed. After this, no older tenure can write the pointer any more.
CLAIM = """
UPDATE payout_pointer SET epoch = %(epoch)s, lease_uid = %(lease_uid)s
 WHERE name = 'payouts' AND epoch <= %(epoch)s
RETURNING pos"""

# Move: pointer pos -> pos + 1 with our epoch; the same transaction pays the batch.
# No row updated = fenced off: roll back, nothing is paid.
MOVE = """
UPDATE payout_pointer SET pos = %(batch)s, epoch = %(epoch)s, lease_uid = %(lease_uid)s,
       moved_by = %(replica)s, moved_at = now()
 WHERE name = 'payouts' AND epoch <= %(epoch)s"""

PAY = """
INSERT INTO payouts (batch, merchant, amount_cents, epoch, lease_uid, replica)
VALUES (%(batch)s, %(merchant)s, %(amount)s, %(epoch)s, %(lease_uid)s, %(replica)s)"""


class Fenced(Exception):
    """A newer epoch owns the pointer: this replica's write was refused and rolled back."""


def pay_batch(conn, batch, doc, replica):
    """Pay `batch` and move the pointer to it, in one transaction fenced by doc's epoch."""
    params = {"batch": batch, "epoch": doc["epoch"], "lease_uid": doc["lease_uid"],
              "replica": replica}
    with conn.transaction():  # BEGIN ... COMMIT, or ROLLBACK if anything below raises
        if conn.execute(MOVE, params).rowcount == 0:
            raise Fenced()
        with conn.cursor() as cur:
            cur.executemany(PAY, [dict(params, merchant=m, amount=1000 + batch % 97)
                                  for m in MERCHANTS])
# --- pattern: end


# The control case (PAYOUTS_FENCING=0): the same statements without the epoch condition. The
# pointer still records the epoch, so the damage can be read off the database afterwards.
CLAIM_UNFENCED = "SELECT pos FROM payout_pointer WHERE name = 'payouts'"
MOVE_UNFENCED = MOVE.replace("\n WHERE name = 'payouts' AND epoch <= %(epoch)s",
                             "\n WHERE name = 'payouts'")
assert MOVE_UNFENCED != MOVE


def record(conn, stage, outcome, doc, batch):
    """Audit (not part of the pattern): one row per attempt, in a transaction of its own."""
    conn.execute(
        """INSERT INTO attempts (stage, outcome, replica, epoch, pointer_epoch, batch)
           VALUES (%s, %s, %s, %s, (SELECT epoch FROM payout_pointer WHERE name = 'payouts'), %s)""",
        (stage, outcome, REPLICA, doc["epoch"], batch))


def maybe_freeze(doc, batch):
    """Demo fault: stop this process (SIGSTOP) after the check and before the write, the one
    window no client-side check can close. run.sh resumes it with SIGCONT."""
    if not FAULT_DIR:
        return
    trigger = os.path.join(FAULT_DIR, f"freeze-{REPLICA}")
    try:
        os.remove(trigger)
    except FileNotFoundError:
        return
    with open(os.path.join(FAULT_DIR, f"frozen-{REPLICA}.json"), "w") as f:
        json.dump({"replica": REPLICA, "epoch": doc["epoch"], "batch": batch}, f)
    log(f"FREEZE: read is_leader=true with epoch {doc['epoch']}, about to pay batch {batch}; "
        "stopping myself (SIGSTOP)")
    os.kill(os.getpid(), signal.SIGSTOP)
    log(f"RESUMED: now writing batch {batch} with epoch {doc['epoch']}, without asking leaderd again")


def main():
    stopping = []
    signal.signal(signal.SIGTERM, lambda *_: stopping.append(1))
    conn = psycopg.connect(DSN, autocommit=True)  # each transaction is explicit
    claim, move = (CLAIM, MOVE) if FENCING else (CLAIM_UNFENCED, MOVE_UNFENCED)
    log(f"started, fencing {'on' if FENCING else 'OFF'}, leaderd at {LEADER_URL}")
    leading = None
    while not stopping:
        got = read_leader(LEADER_URL)
        if got is None:
            if leading is not None:
                log(f"not leader any more (was epoch {leading})")
                leading = None
            time.sleep(INTERVAL)
            continue
        doc, deadline = got
        if leading != doc["epoch"]:
            log(f"leading with epoch {doc['epoch']} (lease_uid {doc['lease_uid']})")
            leading = doc["epoch"]
        row = conn.execute(claim, {"epoch": doc["epoch"], "lease_uid": doc["lease_uid"]}).fetchone()
        if row is None:
            log(f"claim fenced off: epoch {doc['epoch']} is stale")
            record(conn, "claim", "fenced", doc, None)
            time.sleep(INTERVAL)
            continue
        batch = row[0] + 1
        if time.monotonic() >= deadline:
            continue  # our claim ran out while we read the pointer: ask leaderd again
        maybe_freeze(doc, batch)
        try:
            if FENCING:
                pay_batch(conn, batch, doc, REPLICA)
            else:
                pay_batch_unfenced(conn, batch, doc, move)
        except Fenced:
            log(f"FENCED: batch {batch} with epoch {doc['epoch']} refused, rolled back")
            record(conn, "write", "fenced", doc, batch)
        else:
            record(conn, "write", "committed", doc, batch)
        time.sleep(INTERVAL)
    conn.close()
    log("stopped")
    return 0


def pay_batch_unfenced(conn, batch, doc, move):
    """pay_batch with the epoch condition skipped (PAYOUTS_FENCING=0): the control case."""
    params = {"batch": batch, "epoch": doc["epoch"], "lease_uid": doc["lease_uid"],
              "replica": REPLICA}
    with conn.transaction():
        if conn.execute(move, params).rowcount == 0:
            raise Fenced()
        with conn.cursor() as cur:
            cur.executemany(PAY, [dict(params, merchant=m, amount=1000 + batch % 97)
                                  for m in MERCHANTS])


if __name__ == "__main__":
    sys.exit(main())
