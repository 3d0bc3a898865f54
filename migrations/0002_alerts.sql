-- Every alert transition, as the engine emitted it.
CREATE TABLE alerts (
    id        INTEGER PRIMARY KEY,
    rule      TEXT NOT NULL,
    series    TEXT NOT NULL,
    state     TEXT NOT NULL,
    severity  TEXT NOT NULL,
    value     REAL,
    unit      TEXT,
    ts        INTEGER NOT NULL,    -- epoch ms
    message   TEXT NOT NULL,
    notify    TEXT NOT NULL        -- channels asked for, comma-separated
);
CREATE INDEX alerts_ts ON alerts(ts);
CREATE INDEX alerts_rule_series ON alerts(rule, series);

-- Current state of each alert that is not ok (pending, firing, …) and the engine's
-- timers: what survives a restart. `record` is JSON owned by the engine.
CREATE TABLE alert_state (
    rule     TEXT NOT NULL,
    series   TEXT NOT NULL,
    record   TEXT NOT NULL,
    updated  INTEGER NOT NULL,
    PRIMARY KEY (rule, series)
) WITHOUT ROWID;

-- Active silences (JSON records owned by the engine).
CREATE TABLE silences (
    id      TEXT PRIMARY KEY,
    record  TEXT NOT NULL
) WITHOUT ROWID;
