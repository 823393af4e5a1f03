-- The embedded (and SQL) cart store; the distributed one is Redis.
-- A cart's key is `g-{id}` for a guest cart and `u-{user id}` for a user's cart.
CREATE TABLE carts (
    key        TEXT PRIMARY KEY,
    id         UUID        NOT NULL,
    owner      TEXT        NOT NULL CHECK (owner IN ('guest', 'user')),
    currency   TEXT,
    -- A guest cart merged into a user's cart: it answers 404 from then on.
    retired    BOOLEAN     NOT NULL DEFAULT FALSE,
    created_at TIMESTAMPTZ NOT NULL,
    updated_at TIMESTAMPTZ NOT NULL,
    expires_at TIMESTAMPTZ NOT NULL
);
CREATE INDEX carts_expiry ON carts (expires_at);

CREATE TABLE cart_lines (
    cart_key TEXT   NOT NULL REFERENCES carts (key) ON DELETE CASCADE,
    sku      TEXT   NOT NULL,
    quantity BIGINT NOT NULL CHECK (quantity > 0),
    PRIMARY KEY (cart_key, sku)
);

-- Orders that emptied a cart: a repeated checkout completion changes nothing.
CREATE TABLE cart_checkouts (
    cart_key TEXT        NOT NULL REFERENCES carts (key) ON DELETE CASCADE,
    order_id UUID        NOT NULL,
    at       TIMESTAMPTZ NOT NULL,
    PRIMARY KEY (cart_key, order_id)
);
