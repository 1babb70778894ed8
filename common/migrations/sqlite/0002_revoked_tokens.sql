-- Revoked refresh tokens (SQLite). Keep in step with ../postgres/0002_revoked_tokens.sql.
-- Refresh tokens are signed and checked without the database, so logging out (or rotating a
-- refresh token) cannot take one back by itself: the API records its jti here and refuses
-- the token while it would otherwise still be valid. A row is needed only until the token
-- expires (expires_at, microseconds since the Unix epoch, UTC); expired rows are purged.
-- jti is NOT NULL explicitly: SQLite lets a non-integer PRIMARY KEY hold NULL otherwise.
CREATE TABLE IF NOT EXISTS revoked_tokens (
    jti         TEXT     NOT NULL PRIMARY KEY,
    expires_at  INTEGER  NOT NULL
);
CREATE INDEX IF NOT EXISTS revoked_tokens_expires_at ON revoked_tokens (expires_at);
