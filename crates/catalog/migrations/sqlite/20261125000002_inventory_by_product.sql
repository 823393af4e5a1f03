-- Stock by product: reading a product's variants with their stock, and a product's revision.
CREATE INDEX inventory_product ON inventory (product_id);
