-- Notification outbox: one row per (alert event × channel), written before the first
-- attempt and kept until it is delivered or dead. Workers read it oldest first per
-- channel; a restart picks up every pending row.
CREATE TABLE IF NOT EXISTS outbox (
    -- Stable: a hash of rule, series, state, event time and channel, so enqueueing the
    -- same event twice is a no-op and a retry after a crash is recognisable.
    id          TEXT PRIMARY KEY NOT NULL,
    channel     TEXT NOT NULL,
    -- The AlertEvent as JSON.
    event       TEXT NOT NULL,
    status      TEXT NOT NULL DEFAULT 'pending'
                CHECK (status IN ('pending', 'delivered', 'dead')),
    -- Epoch milliseconds.
    created_at  INTEGER NOT NULL,
    attempts    INTEGER NOT NULL DEFAULT 0,
    -- Earliest next attempt (backoff, Telegram's retry_after).
    next_at     INTEGER NOT NULL,
    -- Targets (e.g. Telegram chat ids) already served, as a JSON array: a retry skips them.
    done        TEXT NOT NULL DEFAULT '[]',
    -- Targets that refused for good (bot blocked, chat gone), as a JSON array.
    refused     TEXT NOT NULL DEFAULT '[]',
    last_error  TEXT,
    updated_at  INTEGER NOT NULL
);

CREATE INDEX IF NOT EXISTS outbox_queue ON outbox (channel, status, created_at);
