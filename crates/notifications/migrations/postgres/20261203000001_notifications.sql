-- One email to send, per (event, template): recorded in the transaction that records the event
-- in the inbox, so an event makes its emails exactly once. The sender claims due rows, renders
-- them from `data` (the event's payload) when it sends, and records the outcome.
CREATE TABLE deliveries (
    id              UUID        PRIMARY KEY,
    event_id        UUID        NOT NULL,
    event_type      TEXT        NOT NULL,
    template        TEXT        NOT NULL,
    -- The user written to; their address is asked of identity when sending.
    user_id         UUID        NOT NULL,
    -- The address the last attempt went to (NULL until one was made).
    recipient       TEXT,
    data            JSONB       NOT NULL,
    -- `queued`, `sent` or `failed`.
    status          TEXT        NOT NULL,
    attempts        INTEGER     NOT NULL DEFAULT 0,
    last_error      TEXT,
    next_attempt_at TIMESTAMPTZ NOT NULL,
    -- A sender holds the row until then while it sends; a crashed sender's rows come back.
    leased_until    TIMESTAMPTZ,
    created_at      TIMESTAMPTZ NOT NULL,
    sent_at         TIMESTAMPTZ,
    -- The trace of the event that caused it.
    traceparent     TEXT,
    UNIQUE (event_id, template)
);
CREATE INDEX deliveries_due ON deliveries (next_attempt_at) WHERE status = 'queued';
CREATE INDEX deliveries_status ON deliveries (status, id);
