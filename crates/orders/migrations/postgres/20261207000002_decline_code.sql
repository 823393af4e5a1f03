-- Why a payment was declined, for the shopper (the order's view) and not only the event.
ALTER TABLE orders ADD COLUMN payment_decline_code TEXT;
