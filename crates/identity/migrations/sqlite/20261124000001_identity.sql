CREATE TABLE users (
    id               BLOB PRIMARY KEY,
    email            TEXT        NOT NULL,
    -- Lower-cased email: uniqueness is case-insensitive.
    email_normalized TEXT        NOT NULL UNIQUE,
    name             TEXT        NOT NULL,
    -- PHC string (argon2id). NULL for accounts that only sign in through a social provider.
    password_hash    TEXT,
    roles            TEXT        NOT NULL,
    created_at       TEXT NOT NULL,
    updated_at       TEXT NOT NULL
);

-- A login session: one family of refresh tokens, rotated on every use.
CREATE TABLE sessions (
    id             BLOB PRIMARY KEY,
    user_id        BLOB        NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    created_at     TEXT NOT NULL,
    expires_at     TEXT NOT NULL,
    revoked_at     TEXT,
    revoked_reason TEXT
);
CREATE INDEX sessions_user ON sessions (user_id);

-- Only a SHA-256 digest of each refresh token is stored.
CREATE TABLE refresh_tokens (
    token_hash BLOB  PRIMARY KEY,
    session_id BLOB        NOT NULL REFERENCES sessions (id) ON DELETE CASCADE,
    issued_at  TEXT NOT NULL,
    expires_at TEXT NOT NULL,
    spent_at   TEXT
);
CREATE INDEX refresh_tokens_session ON refresh_tokens (session_id);

-- Access-token signing keys. The newest unretired key signs; retired keys stay published
-- until every token they signed has expired.
CREATE TABLE signing_keys (
    kid         TEXT PRIMARY KEY,
    algorithm   TEXT        NOT NULL,
    private_key BLOB        NOT NULL,
    public_jwk  TEXT        NOT NULL,
    created_at  TEXT NOT NULL,
    retired_at  TEXT
);

-- Failed-login counters per account and per client address, in fixed windows.
CREATE TABLE login_throttle (
    key               TEXT PRIMARY KEY,
    failures          INTEGER NOT NULL,
    window_started_at BIGINT  NOT NULL
);
