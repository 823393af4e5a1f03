-- Categories form a tree by `parent`; products name theirs by slug.
CREATE TABLE categories (
    slug       TEXT PRIMARY KEY,
    name       TEXT        NOT NULL,
    parent     TEXT REFERENCES categories (slug),
    created_at TIMESTAMPTZ NOT NULL,
    updated_at TIMESTAMPTZ NOT NULL
);

CREATE TABLE products (
    id          UUID PRIMARY KEY,
    slug        TEXT        NOT NULL UNIQUE,
    title       TEXT        NOT NULL,
    description TEXT        NOT NULL,
    brand       TEXT,
    category    TEXT        NOT NULL REFERENCES categories (slug),
    attributes  JSONB       NOT NULL,
    images      JSONB       NOT NULL,
    status      TEXT        NOT NULL CHECK (status IN ('draft', 'active', 'archived')),
    -- Increases with every change; read models and ETags follow it.
    version     BIGINT      NOT NULL,
    created_at  TIMESTAMPTZ NOT NULL,
    updated_at  TIMESTAMPTZ NOT NULL
);
CREATE INDEX products_category ON products (category, status);
CREATE INDEX products_updated ON products (updated_at);

CREATE TABLE variants (
    sku          TEXT PRIMARY KEY,
    product_id   UUID        NOT NULL REFERENCES products (id),
    position     INTEGER     NOT NULL,
    title        TEXT        NOT NULL,
    price_amount BIGINT      NOT NULL CHECK (price_amount >= 0),
    currency     TEXT        NOT NULL,
    attributes   JSONB       NOT NULL
);
CREATE INDEX variants_product ON variants (product_id, position);

-- Stock per SKU. A narrow table of its own: it is written on every reservation.
CREATE TABLE inventory (
    sku        TEXT PRIMARY KEY REFERENCES variants (sku),
    -- A SKU never moves to another product; kept here so stock events name their product.
    product_id UUID        NOT NULL,
    on_hand    BIGINT      NOT NULL CHECK (on_hand >= 0),
    reserved   BIGINT      NOT NULL CHECK (reserved >= 0),
    updated_at TIMESTAMPTZ NOT NULL,
    -- The invariant that makes overselling impossible, enforced by the database itself.
    CHECK (reserved <= on_hand)
);
CREATE INDEX inventory_updated ON inventory (updated_at);

-- Stock held for an order, keyed by the order id so that every call about it is idempotent.
CREATE TABLE reservations (
    order_id   UUID PRIMARY KEY,
    state      TEXT        NOT NULL CHECK (state IN ('held', 'committed', 'released', 'returned')),
    expires_at TIMESTAMPTZ NOT NULL,
    created_at TIMESTAMPTZ NOT NULL,
    updated_at TIMESTAMPTZ NOT NULL
);
CREATE INDEX reservations_expiring ON reservations (expires_at) WHERE state = 'held';

CREATE TABLE reservation_lines (
    order_id UUID   NOT NULL REFERENCES reservations (order_id),
    sku      TEXT   NOT NULL,
    quantity BIGINT NOT NULL CHECK (quantity > 0),
    PRIMARY KEY (order_id, sku)
);
