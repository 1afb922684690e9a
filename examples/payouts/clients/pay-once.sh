#!/bin/sh
# Pay the next payout batch if this replica leads, fenced by leaderd's epoch (e.g. from cron).
# Needs curl, psql, GNU date. Env: LEADER_URL, PAYOUTS_DSN (libpq), REPLICA.
# Exit 0: paid, or not leader (nothing to do); 3: fenced off (a newer epoch owns the pointer).
set -eu
LEADER_URL=${LEADER_URL:-http://127.0.0.1:4040/leader}
REPLICA=${REPLICA:-$(hostname)}
now_ms() { echo $(($(date +%s%N) / 1000000)); }

# 1. The read. No answer from leaderd means "not leader".
started=$(now_ms)
doc=$(curl -sf -m 1 "$LEADER_URL") || { echo "not leader (no answer)"; exit 0; }
field() { printf '%s' "$doc" | sed -n "s/.*\"$1\":\"\{0,1\}\([^\",}]*\).*/\1/p"; } # flat JSON
[ "$(field is_leader)" = true ] || { echo "not leader"; exit 0; }
epoch=$(field epoch) uid=$(field lease_uid)
# 2. The deadline: valid_for_ms counts from before our own read; keep a margin.
deadline=$((started + $(field valid_for_ms) - 200))

# 3. The epoch on every write. Claim: raise the pointer's fence to our epoch, read pos.
sql() { psql -X -Atq -v ON_ERROR_STOP=1 -v epoch="$epoch" -v uid="$uid" -v replica="$REPLICA" "$@" "$PAYOUTS_DSN"; }
pos=$(sql <<'SQL'
UPDATE payout_pointer SET epoch = :epoch, lease_uid = :'uid'
 WHERE name = 'payouts' AND epoch <= :epoch
RETURNING pos;
SQL
)
[ -n "$pos" ] || { echo "fenced off: epoch $epoch is stale"; exit 3; }
[ "$(now_ms)" -lt "$deadline" ] || { echo "claim ran out before the write"; exit 0; }
# Move + pay: one statement, so one transaction; the fence matched no row = nothing paid.
paid=$(sql -v batch="$((pos + 1))" <<'SQL'
WITH moved AS (
  UPDATE payout_pointer SET pos = :batch, epoch = :epoch, lease_uid = :'uid',
         moved_by = :'replica', moved_at = now()
   WHERE name = 'payouts' AND epoch <= :epoch
  RETURNING pos),
paid AS (
  INSERT INTO payouts (batch, merchant, amount_cents, epoch, lease_uid, replica)
  SELECT pos, m, 1000 + pos % 97, :epoch, :'uid', :'replica'
    FROM moved, unnest(ARRAY['m-ana', 'm-bo', 'm-cy']) AS m
  RETURNING batch)
SELECT count(*) FROM paid;
SQL
)
[ "$paid" -gt 0 ] || { echo "fenced off: epoch $epoch is stale, nothing paid"; exit 3; }
echo "paid batch $((pos + 1)) with epoch $epoch"
