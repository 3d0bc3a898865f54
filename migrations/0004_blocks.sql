-- Recent readings: one row per flush holding the new points of every series (the block
-- codec, src/store/block.rs), so a flush writes one row whatever the number of series.
-- The writer merges blocks into per-series chunks (`chunks`, compacted = 0) once they
-- hold enough points or the hour they were written in is over; until then every query
-- reads them too. Few rows at any time, appended in id order: no index.
CREATE TABLE blocks (
    id        INTEGER PRIMARY KEY,
    first_ts  INTEGER NOT NULL,   -- epoch ms, oldest point
    last_ts   INTEGER NOT NULL,   -- epoch ms, newest point
    count     INTEGER NOT NULL,   -- points
    data      BLOB NOT NULL
);
