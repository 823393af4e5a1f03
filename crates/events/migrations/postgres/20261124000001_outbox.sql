-- Events waiting to be published. A row is written in the same transaction as the state
-- change it announces, so an event exists if and only if its change committed.
CREATE TABLE event_outbox (
    seq          BIGSERIAL PRIMARY KEY,
    event_id     UUID        NOT NULL UNIQUE,
    event_type   TEXT        NOT NULL,
    subject      TEXT,
    envelope     JSONB       NOT NULL,
    created_at   TIMESTAMPTZ NOT NULL,
    published_at TIMESTAMPTZ
);

CREATE INDEX event_outbox_pending ON event_outbox (seq) WHERE published_at IS NULL;
