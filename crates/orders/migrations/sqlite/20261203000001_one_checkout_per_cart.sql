-- The cart a checkout saga empties, while the saga runs: `user:{id}` for a user's own cart,
-- `guest:{id}` for a guest cart. At most one unfinished checkout per cart, so two requests under
-- different idempotency keys can never both charge for one cart's contents.
ALTER TABLE sagas ADD COLUMN cart_ref TEXT;
CREATE UNIQUE INDEX sagas_one_checkout_per_cart ON sagas (cart_ref)
    WHERE kind = 'checkout' AND step NOT IN ('done', 'failed', 'rejected', 'abandoned');
