-- The embedded bus: an append-only log of events, and each consumer's progress through it.
CREATE TABLE bus_log (
    seq         INTEGER PRIMARY KEY AUTOINCREMENT,
    event_id    BLOB NOT NULL UNIQUE,
    event_type  TEXT NOT NULL,
    subject     TEXT NOT NULL,
    envelope    TEXT NOT NULL,
    appended_at TEXT NOT NULL
);

-- How far each consumer has read the log.
CREATE TABLE bus_consumers (
    consumer TEXT PRIMARY KEY,
    position INTEGER NOT NULL
);

-- Events a consumer must (re)try: after a failure (attempts > 0), or deferred behind an
-- earlier event of the same subject (attempts = 0).
CREATE TABLE bus_retries (
    consumer   TEXT    NOT NULL,
    seq        INTEGER NOT NULL,
    subject    TEXT    NOT NULL,
    attempts   INTEGER NOT NULL,
    due_at     INTEGER NOT NULL, -- unix milliseconds
    last_error TEXT,
    PRIMARY KEY (consumer, seq)
);
CREATE INDEX bus_retries_subject ON bus_retries (consumer, subject, seq);

-- Events parked after their last attempt.
CREATE TABLE bus_parked (
    consumer  TEXT    NOT NULL,
    seq       INTEGER NOT NULL,
    attempts  INTEGER NOT NULL,
    error     TEXT    NOT NULL,
    parked_at TEXT    NOT NULL,
    PRIMARY KEY (consumer, seq)
);
