-- Series catalogue: one row per series ever seen.
CREATE TABLE series (
    id          INTEGER PRIMARY KEY,
    name        TEXT NOT NULL UNIQUE,
    unit        TEXT,
    first_seen  INTEGER NOT NULL,   -- epoch ms
    last_seen   INTEGER NOT NULL,   -- epoch ms (event time of the newest reading)
    last_value  REAL
);

-- Readings, packed: one row per series per flush, merged per series and hour once
-- the hour has passed (`compacted`). `data` is the chunk codec's blob
-- (src/store/chunk.rs).
--
-- Recent chunks are indexed by time only: every flush appends at the end of that
-- index. An index by series would take one random page write per series per flush
-- (measured: ~12x the bytes written per hour at 100 series and 1 Hz), so only merged
-- chunks, written once an hour, are indexed by series.
CREATE TABLE chunks (
    id         INTEGER PRIMARY KEY,
    series_id  INTEGER NOT NULL REFERENCES series(id),
    first_ts   INTEGER NOT NULL,
    last_ts    INTEGER NOT NULL,
    count      INTEGER NOT NULL,
    compacted  INTEGER NOT NULL DEFAULT 0,
    data       BLOB NOT NULL
);
CREATE INDEX chunks_series ON chunks(series_id, first_ts) WHERE compacted = 1;
CREATE INDEX chunks_recent ON chunks(last_ts) WHERE compacted = 0;

-- Per-minute rollups, plain SQL: SELECT * FROM rollups_named WHERE series = '…'.
CREATE TABLE rollups (
    series_id  INTEGER NOT NULL REFERENCES series(id),
    minute     INTEGER NOT NULL,   -- epoch ms of the minute's start
    min        REAL NOT NULL,
    max        REAL NOT NULL,
    avg        REAL NOT NULL,
    count      INTEGER NOT NULL,
    PRIMARY KEY (series_id, minute)
) WITHOUT ROWID;
CREATE INDEX rollups_minute ON rollups(minute);

CREATE VIEW rollups_named AS
    SELECT s.name AS series, r.minute, datetime(r.minute / 1000, 'unixepoch') AS time,
           r.min, r.max, r.avg, r.count
    FROM rollups r JOIN series s ON s.id = r.series_id;
