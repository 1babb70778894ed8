-- A description holding NUL (sqlite). Keep in step with ../postgres/0006_description_exact.sql.
-- PostgreSQL text cannot hold NUL, yet a description is free text and is kept as sent. When
-- it holds NUL, `description` keeps it with each NUL shown as U+FFFD (readable and
-- searchable) and `description_exact` the exact text, JSON-encoded; otherwise
-- `description_exact` is NULL. Both backends store it the same way. Adding a nullable
-- column without a default rewrites no row.

ALTER TABLE events ADD COLUMN description_exact TEXT;
