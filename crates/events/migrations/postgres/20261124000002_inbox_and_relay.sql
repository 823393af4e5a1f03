-- The relay's order check looks up the earliest pending event of a subject.
CREATE INDEX event_outbox_pending_subject ON event_outbox (subject, seq) WHERE published_at IS NULL;

-- Relays LISTEN on this channel: a committed insert wakes them at once.
CREATE FUNCTION event_outbox_notify() RETURNS trigger AS $$
BEGIN
    PERFORM pg_notify('event_outbox', '');
    RETURN NULL;
END
$$ LANGUAGE plpgsql;

CREATE TRIGGER event_outbox_notify AFTER INSERT ON event_outbox
    FOR EACH STATEMENT EXECUTE FUNCTION event_outbox_notify();

-- Events a consumer has applied, recorded in the same transaction as the effect: a redelivered
-- event finds its id here and is acknowledged without a second effect.
CREATE TABLE event_inbox (
    consumer     TEXT        NOT NULL,
    event_id     UUID        NOT NULL,
    processed_at TIMESTAMPTZ NOT NULL,
    PRIMARY KEY (consumer, event_id)
);
CREATE INDEX event_inbox_processed ON event_inbox (processed_at);
