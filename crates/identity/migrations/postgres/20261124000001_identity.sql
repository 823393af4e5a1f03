CREATE TABLE users (
    id               UUID PRIMARY KEY,
    email            TEXT        NOT NULL,
    -- Lower-cased email: uniqueness is case-insensitive.
    email_normalized TEXT        NOT NULL UNIQUE,
    name             TEXT        NOT NULL,
    -- PHC string (argon2id). NULL for accounts that only sign in through a social provider.
    password_hash    TEXT,
    roles            JSONB       NOT NULL,
    created_at       TIMESTAMPTZ NOT NULL,
    updated_at       TIMESTAMPTZ NOT NULL
);

-- A login session: one family of refresh tokens, rotated on every use.
CREATE TABLE sessions (
    id             UUID PRIMARY KEY,
    user_id        UUID        NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    created_at     TIMESTAMPTZ NOT NULL,
    expires_at     TIMESTAMPTZ NOT NULL,
    revoked_at     TIMESTAMPTZ,
    revoked_reason TEXT
);
CREATE INDEX sessions_user ON sessions (user_id);

-- Only a SHA-256 digest of each refresh token is stored.
CREATE TABLE refresh_tokens (
    token_hash BYTEA PRIMARY KEY,
    session_id UUID        NOT NULL REFERENCES sessions (id) ON DELETE CASCADE,
    issued_at  TIMESTAMPTZ NOT NULL,
    expires_at TIMESTAMPTZ NOT NULL,
    spent_at   TIMESTAMPTZ
);
CREATE INDEX refresh_tokens_session ON refresh_tokens (session_id);

-- Access-token signing keys. The newest unretired key signs; retired keys stay published
-- until every token they signed has expired.
CREATE TABLE signing_keys (
    kid         TEXT PRIMARY KEY,
    algorithm   TEXT        NOT NULL,
    private_key BYTEA       NOT NULL,
    public_jwk  JSONB       NOT NULL,
    created_at  TIMESTAMPTZ NOT NULL,
    retired_at  TIMESTAMPTZ
);

-- Failed-login counters per account and per client address, in fixed windows.
CREATE TABLE login_throttle (
    key               TEXT PRIMARY KEY,
    failures          INTEGER NOT NULL,
    window_started_at BIGINT  NOT NULL
);
