-- Requests for a one-time link by email: proving an address (`verify_email`) or resetting a
-- password (`reset_password`). The link's token is derived from the request's id and the secret
-- below, so that the mailer can ask for it when it sends (no token travels in an event); only
-- its digest is stored, to find the request when the token comes back.
CREATE TABLE link_requests (
    id            BLOB        PRIMARY KEY,
    -- NULL for a password reset asked for an address no account has: the request is recorded
    -- all the same, so that the answer does not tell whether the account exists.
    user_id       BLOB        REFERENCES users (id) ON DELETE CASCADE,
    purpose       TEXT        NOT NULL,
    -- The (normalised) address the link is sent to: verifying proves this one.
    email         TEXT        NOT NULL,
    token_hash    BLOB        NOT NULL UNIQUE,
    created_at    TEXT        NOT NULL,
    expires_at    TEXT        NOT NULL,
    used_at       TEXT,
    -- Set when a newer request of the same purpose replaced this one.
    superseded_at TEXT
);
CREATE INDEX link_requests_user ON link_requests (user_id, purpose);
CREATE INDEX link_requests_expiry ON link_requests (expires_at);

-- The key the link tokens are derived with: one row, made on first start, shared by replicas.
CREATE TABLE link_secrets (
    id     INTEGER PRIMARY KEY,
    secret BLOB    NOT NULL
);
