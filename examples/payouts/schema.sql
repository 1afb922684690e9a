-- The payouts example's schema (PostgreSQL). The fence is the `epoch` column of the pointer
-- row: it keeps the highest leaderd epoch that wrote it, and the app's writes carry their
-- epoch in the WHERE clause (see fenced.sql). Everything below "audit" exists only so that
-- run.sh can count what happened from the database; an app copying the pattern needs only
-- payout_pointer and its own payout table.

-- The one row every replica competes for: the last batch paid. Only one replica may move it
-- from 417 to 418.
CREATE TABLE payout_pointer (
    name      text PRIMARY KEY,
    pos       bigint NOT NULL,            -- last batch paid
    epoch     bigint NOT NULL DEFAULT 0,  -- the fence: highest leaderd epoch that wrote this row
    lease_uid text,                       -- leaderd's lease_uid with that epoch (see docs/clients.md)
    moved_by  text,                       -- replica that last moved pos
    moved_at  timestamptz
);
INSERT INTO payout_pointer (name, pos) VALUES ('payouts', 417);

-- One row per merchant per batch, written in the same transaction as the pointer move. There
-- is deliberately no UNIQUE (batch, merchant): a payout stands for money sent to a bank, which
-- no database constraint can take back, and the example counts duplicates instead.
CREATE TABLE payouts (
    id           bigserial PRIMARY KEY,
    batch        bigint NOT NULL,
    merchant     text   NOT NULL,
    amount_cents bigint NOT NULL,
    epoch        bigint NOT NULL,
    lease_uid    text,
    replica      text   NOT NULL,
    paid_at      timestamptz NOT NULL DEFAULT clock_timestamp()
);

-- audit: every write of payout_pointer.pos, recorded by the database itself (a trigger), in
-- the order the row lock was taken, i.e. commit order. A regression is new_pos < old_pos.
CREATE TABLE pointer_history (
    id       bigserial PRIMARY KEY,
    old_pos  bigint NOT NULL,
    new_pos  bigint NOT NULL,
    epoch    bigint NOT NULL,
    replica  text,
    at       timestamptz NOT NULL DEFAULT clock_timestamp()
);
CREATE FUNCTION record_pointer_move() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO pointer_history (old_pos, new_pos, epoch, replica)
    VALUES (OLD.pos, NEW.pos, NEW.epoch, NEW.moved_by);
    RETURN NEW;
END $$;
-- Fires only for UPDATEs that set pos (the write), not for the epoch-only claim.
CREATE TRIGGER pointer_moves AFTER UPDATE OF pos ON payout_pointer
    FOR EACH ROW EXECUTE FUNCTION record_pointer_move();

-- audit: write attempts and how they ended, one row per attempt, written by the app after the
-- attempt's own transaction ended (a fenced transaction rolled back, so its record cannot be
-- part of it). stage 'write': the payout transaction (outcome 'committed', or 'fenced' when its
-- UPDATE matched no row and it rolled back); stage 'claim': the epoch-only claim before reading
-- pos matched no row, so the replica learnt it was stale before doing anything.
CREATE TABLE attempts (
    id            bigserial PRIMARY KEY,
    stage         text   NOT NULL CHECK (stage IN ('claim', 'write')),
    outcome       text   NOT NULL CHECK (outcome IN ('committed', 'fenced')),
    replica       text   NOT NULL,
    epoch         bigint NOT NULL,   -- the epoch the replica carried
    pointer_epoch bigint,            -- the epoch the pointer row held when it was fenced off
    batch         bigint,
    at            timestamptz NOT NULL DEFAULT clock_timestamp()
);
