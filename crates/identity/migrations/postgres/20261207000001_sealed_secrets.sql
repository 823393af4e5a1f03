-- The data key that seals identity's secrets at rest (signing keys, the link secret), stored
-- only wrapped by a master key kept outside the database. One row, made on first start.
CREATE TABLE data_keys (
    id            SMALLINT    PRIMARY KEY CHECK (id = 1),
    -- The fingerprint of the master key that wraps it: start-up names it when it is not the
    -- configured one.
    master_key_id TEXT        NOT NULL,
    wrapped       BYTEA       NOT NULL,
    created_at    TIMESTAMPTZ NOT NULL,
    rewrapped_at  TIMESTAMPTZ
);
