-- A checkout's outcome is kept under its key in the domain's terms (JSON); how it is answered
-- over HTTP is derived on each replay. Keys answered before keep the answer as it was given,
-- wrapped as {"given": {status, body}}, until they expire.
ALTER TABLE idempotency_keys ADD COLUMN outcome TEXT;
UPDATE idempotency_keys
   SET outcome = json_object('given', json_object('status', response_status, 'body', response_body))
 WHERE response_status IS NOT NULL;
ALTER TABLE idempotency_keys DROP COLUMN response_status;
ALTER TABLE idempotency_keys DROP COLUMN response_body;
