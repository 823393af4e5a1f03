-- Events waiting to be published. A row is written in the same transaction as the state
-- change it announces, so an event exists if and only if its change committed.
CREATE TABLE event_outbox (
    seq          INTEGER PRIMARY KEY AUTOINCREMENT,
    event_id     BLOB    NOT NULL UNIQUE,
    event_type   TEXT    NOT NULL,
    subject      TEXT,
    envelope     TEXT    NOT NULL,
    created_at   TEXT    NOT NULL,
    published_at TEXT
);

CREATE INDEX event_outbox_pending ON event_outbox (seq) WHERE published_at IS NULL;
