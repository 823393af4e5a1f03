-- Whether the user's email is proven to be theirs: a sign-in provider asserted it verified.
-- (Proving it by mail comes with the notifications service.)
ALTER TABLE users ADD COLUMN email_verified BOOLEAN NOT NULL DEFAULT FALSE;

-- External sign-in identities: a provider's account (provider, subject) belongs to one user,
-- and a user has at most one identity per provider.
CREATE TABLE user_identities (
    provider  TEXT        NOT NULL,
    subject   TEXT        NOT NULL,
    user_id   BLOB        NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    -- The email the provider gave when the identity was linked (null when it gave none).
    email     TEXT,
    linked_at TEXT        NOT NULL,
    PRIMARY KEY (provider, subject),
    UNIQUE (user_id, provider)
);

-- Sign-ins in flight. Only a digest of the `state` sent to the provider is kept; the row binds
-- it to the browser that began it (a digest of its cookie), the PKCE verifier, the nonce and
-- the client's redirect, and is deleted when used.
CREATE TABLE oauth_states (
    state_hash    BLOB        PRIMARY KEY,
    browser_hash  BLOB        NOT NULL,
    provider      TEXT        NOT NULL,
    redirect_uri  TEXT        NOT NULL,
    -- The client's own `state`, echoed back to its redirect.
    client_state  TEXT,
    code_verifier TEXT        NOT NULL,
    nonce         TEXT        NOT NULL,
    -- Set when a signed-in user links a provider to their account.
    link_user_id  BLOB,
    expires_at    TEXT        NOT NULL
);
CREATE INDEX oauth_states_expiry ON oauth_states (expires_at);

-- One-time codes handed to the client's redirect after a sign-in, exchanged once for tokens.
CREATE TABLE oauth_codes (
    code_hash  BLOB        PRIMARY KEY,
    user_id    BLOB        NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    provider   TEXT        NOT NULL,
    expires_at TEXT        NOT NULL
);
CREATE INDEX oauth_codes_expiry ON oauth_codes (expires_at);
