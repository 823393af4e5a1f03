-- The built-in sandbox payment provider's own ledger, applied only where the sandbox is the
-- configured provider (its own history table, `_sandbox_migrations`). Databases made before it
-- had its own migrations already hold these tables: IF NOT EXISTS adopts them.
-- It stands for an external processor: the orders tables never join it, and it keeps its own
-- idempotency by key.
CREATE TABLE IF NOT EXISTS sandbox_payments (
    id              TEXT PRIMARY KEY,
    idempotency_key TEXT        NOT NULL UNIQUE,
    order_id        BLOB        NOT NULL,
    amount          BIGINT      NOT NULL CHECK (amount > 0),
    currency        TEXT        NOT NULL,
    payment_method  TEXT        NOT NULL,
    status          TEXT        NOT NULL CHECK (status IN ('succeeded', 'declined')),
    decline_code    TEXT,
    refunded        BIGINT      NOT NULL DEFAULT 0,
    created_at      TEXT NOT NULL,
    CHECK (refunded <= amount)
);

CREATE TABLE IF NOT EXISTS sandbox_refunds (
    id              TEXT PRIMARY KEY,
    idempotency_key TEXT        NOT NULL UNIQUE,
    payment_id      TEXT        NOT NULL REFERENCES sandbox_payments (id),
    amount          BIGINT      NOT NULL CHECK (amount > 0),
    created_at      TEXT NOT NULL
);
