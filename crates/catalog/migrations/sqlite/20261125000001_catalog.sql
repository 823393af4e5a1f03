-- Categories form a tree by `parent`; products name theirs by slug.
CREATE TABLE categories (
    slug       TEXT PRIMARY KEY,
    name       TEXT        NOT NULL,
    parent     TEXT REFERENCES categories (slug),
    created_at TEXT        NOT NULL,
    updated_at TEXT        NOT NULL
);

CREATE TABLE products (
    id          BLOB PRIMARY KEY,
    slug        TEXT        NOT NULL UNIQUE,
    title       TEXT        NOT NULL,
    description TEXT        NOT NULL,
    brand       TEXT,
    category    TEXT        NOT NULL REFERENCES categories (slug),
    attributes  TEXT        NOT NULL,
    images      TEXT        NOT NULL,
    status      TEXT        NOT NULL CHECK (status IN ('draft', 'active', 'archived')),
    -- Increases with every change; read models and ETags follow it.
    version     INTEGER     NOT NULL,
    created_at  TEXT        NOT NULL,
    updated_at  TEXT        NOT NULL
);
CREATE INDEX products_category ON products (category, status);
CREATE INDEX products_updated ON products (updated_at);

CREATE TABLE variants (
    sku          TEXT PRIMARY KEY,
    product_id   BLOB        NOT NULL REFERENCES products (id),
    position     INTEGER     NOT NULL,
    title        TEXT        NOT NULL,
    price_amount INTEGER     NOT NULL CHECK (price_amount >= 0),
    currency     TEXT        NOT NULL,
    attributes   TEXT        NOT NULL
);
CREATE INDEX variants_product ON variants (product_id, position);

-- Stock per SKU. A narrow table of its own: it is written on every reservation.
CREATE TABLE inventory (
    sku        TEXT PRIMARY KEY REFERENCES variants (sku),
    -- A SKU never moves to another product; kept here so stock events name their product.
    product_id BLOB        NOT NULL,
    on_hand    INTEGER     NOT NULL CHECK (on_hand >= 0),
    reserved   INTEGER     NOT NULL CHECK (reserved >= 0),
    updated_at TEXT        NOT NULL,
    -- The invariant that makes overselling impossible, enforced by the database itself.
    CHECK (reserved <= on_hand)
);
CREATE INDEX inventory_updated ON inventory (updated_at);

-- Stock held for an order, keyed by the order id so that every call about it is idempotent.
CREATE TABLE reservations (
    order_id   BLOB PRIMARY KEY,
    state      TEXT        NOT NULL CHECK (state IN ('held', 'committed', 'released', 'returned')),
    expires_at TEXT        NOT NULL,
    created_at TEXT        NOT NULL,
    updated_at TEXT        NOT NULL
);
CREATE INDEX reservations_expiring ON reservations (expires_at) WHERE state = 'held';

CREATE TABLE reservation_lines (
    order_id BLOB   NOT NULL REFERENCES reservations (order_id),
    sku      TEXT   NOT NULL,
    quantity BIGINT NOT NULL CHECK (quantity > 0),
    PRIMARY KEY (order_id, sku)
);
