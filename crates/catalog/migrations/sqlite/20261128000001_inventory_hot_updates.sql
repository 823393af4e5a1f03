-- Nothing reads inventory by its update time (the index's only reader, the search index's
-- reconciliation, groups by product). Without the index, a stock change touches no indexed
-- column, so PostgreSQL updates the row in place (a HOT update) instead of adding an entry to
-- every index of the hottest table: two or three changes per SKU per checkout.
DROP INDEX inventory_updated;
