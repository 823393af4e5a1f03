-- The trace context of the request that started a saga: the events its steps publish carry it,
-- also when another replica finishes the saga after a crash.
ALTER TABLE sagas ADD COLUMN traceparent TEXT;
