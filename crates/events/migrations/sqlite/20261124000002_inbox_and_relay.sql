CREATE INDEX event_outbox_pending_subject ON event_outbox (subject, seq) WHERE published_at IS NULL;

-- Events a consumer has applied, recorded in the same transaction as the effect: a redelivered
-- event finds its id here and is acknowledged without a second effect.
CREATE TABLE event_inbox (
    consumer     TEXT NOT NULL,
    event_id     BLOB NOT NULL,
    processed_at TEXT NOT NULL,
    PRIMARY KEY (consumer, event_id)
);
CREATE INDEX event_inbox_processed ON event_inbox (processed_at);
