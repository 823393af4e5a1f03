-- Envelopes are stored and relayed whole, never queried inside: plain json skips jsonb's
-- conversion on every write and read.
ALTER TABLE event_outbox ALTER COLUMN envelope TYPE json USING envelope::json;
