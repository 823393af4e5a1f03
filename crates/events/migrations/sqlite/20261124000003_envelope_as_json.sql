-- SQLite already stores the envelope as text (kept in step with the PostgreSQL migrations).
SELECT 1;
