-- Human-readable order numbers. One writer at a time on SQLite, so a counter row serves.
CREATE TABLE order_numbers (id INTEGER PRIMARY KEY CHECK (id = 1), next BIGINT NOT NULL);
INSERT INTO order_numbers (id, next) VALUES (1, 100001);

CREATE TABLE orders (
    id                BLOB PRIMARY KEY,
    number            TEXT        NOT NULL UNIQUE,
    user_id           BLOB        NOT NULL,
    status            TEXT        NOT NULL CHECK (status IN ('pending_payment', 'paid', 'payment_failed', 'shipped', 'delivered', 'cancelled')),
    currency          TEXT        NOT NULL,
    subtotal          BIGINT      NOT NULL CHECK (subtotal >= 0),
    shipping          BIGINT      NOT NULL CHECK (shipping >= 0),
    tax               BIGINT      NOT NULL CHECK (tax >= 0),
    total             BIGINT      NOT NULL,
    lines             TEXT       NOT NULL,
    shipping_address  TEXT       NOT NULL,
    payment_provider  TEXT        NOT NULL,
    payment_method    TEXT        NOT NULL,
    payment_status    TEXT        NOT NULL,
    payment_reference TEXT,
    carrier           TEXT,
    tracking_number   TEXT,
    shipped_at        TEXT,
    delivered_at      TEXT,
    history           TEXT       NOT NULL,
    -- Every change is conditional on the version read, so concurrent actions cannot both win.
    version           BIGINT      NOT NULL,
    created_at        TEXT NOT NULL,
    updated_at        TEXT NOT NULL,
    CHECK (total = subtotal + shipping + tax)
);
-- Ids are BLOBv7: newest first is id order.
CREATE INDEX orders_by_user ON orders (user_id, id DESC);
CREATE INDEX orders_by_status ON orders (status, id DESC);

-- The progress of multi-step work on an order (the checkout, a cancellation), one row per
-- kind, moved on by compare-and-set on `step`. A process working on it holds the lease; a
-- row whose lease ran out is picked up by a sweeper and driven to a final step.
CREATE TABLE sagas (
    order_id        BLOB        NOT NULL,
    kind            TEXT        NOT NULL CHECK (kind IN ('checkout', 'cancel')),
    step            TEXT        NOT NULL,
    user_id         BLOB        NOT NULL,
    idempotency_key TEXT,
    plan            TEXT,
    attempts        INTEGER     NOT NULL DEFAULT 0,
    last_error      TEXT,
    lease_until     TEXT NOT NULL,
    created_at      TEXT NOT NULL,
    updated_at      TEXT NOT NULL,
    PRIMARY KEY (order_id, kind)
);
CREATE INDEX sagas_due ON sagas (lease_until) WHERE step NOT IN ('done', 'failed', 'rejected', 'abandoned');

-- Idempotency keys of checkouts, per user: the request's hash, the order id the first request
-- chose, and the final answer once there is one.
CREATE TABLE idempotency_keys (
    user_id         BLOB        NOT NULL,
    key             TEXT        NOT NULL,
    request_hash    BLOB       NOT NULL,
    order_id        BLOB        NOT NULL,
    response_status INTEGER,
    response_body   TEXT,
    created_at      TEXT NOT NULL,
    PRIMARY KEY (user_id, key)
);
CREATE INDEX idempotency_keys_age ON idempotency_keys (created_at);

-- Provider notifications already handled (webhooks are delivered at least once).
CREATE TABLE webhook_events (
    provider    TEXT        NOT NULL,
    event_id    TEXT        NOT NULL,
    received_at TEXT NOT NULL,
    PRIMARY KEY (provider, event_id)
);

-- The built-in sandbox payment provider's own ledger. It stands for an external processor:
-- the orders tables never join it, and it keeps its own idempotency by key.
CREATE TABLE sandbox_payments (
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

CREATE TABLE sandbox_refunds (
    id              TEXT PRIMARY KEY,
    idempotency_key TEXT        NOT NULL UNIQUE,
    payment_id      TEXT        NOT NULL REFERENCES sandbox_payments (id),
    amount          BIGINT      NOT NULL CHECK (amount > 0),
    created_at      TEXT NOT NULL
);
