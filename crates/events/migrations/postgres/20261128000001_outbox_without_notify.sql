-- Relays are woken by their own process after a commit that wrote events, and poll for the
-- rest. A NOTIFY inside the writing transaction serialised the commits of every notifying
-- transaction on the server (PostgreSQL holds a global lock from the NOTIFY's pre-commit to the
-- end of the commit), which capped the rate of every write that records an event.
DROP TRIGGER IF EXISTS event_outbox_notify ON event_outbox;
DROP FUNCTION IF EXISTS event_outbox_notify();
