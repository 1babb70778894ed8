//! Users of the API, and the refresh tokens they revoked.

use std::fmt;

use chrono::{DateTime, Utc};

use sqlx::{AssertSqlSafe, QueryBuilder};

use super::sql::{Value, push_assignments};
use super::{Storage, StorageError, on_pool};
use crate::domain::{Role, User, from_micros, to_micros};

const USER_COLUMNS: &str = "id, username, email, role, is_active, created_at, updated_at";

/// A user to create. The password arrives already hashed: storage never sees a password.
#[derive(Clone)]
pub struct NewUser {
    /// The login name; must not be taken (matched exactly, case-sensitive).
    pub username: String,
    /// Contact address; may be empty.
    pub email: String,
    /// The password hash (a PHC string such as argon2's), stored as given.
    pub password_hash: String,
    /// What the user may do.
    pub role: Role,
    /// Whether the user may log in.
    pub is_active: bool,
}

/// Leaves the password hash out, so that logging a `NewUser` cannot leak it.
impl fmt::Debug for NewUser {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("NewUser")
            .field("username", &self.username)
            .field("email", &self.email)
            .field("password_hash", &"<redacted>")
            .field("role", &self.role)
            .field("is_active", &self.is_active)
            .finish()
    }
}

/// Changes to a user: only the given fields change. The username never changes.
#[derive(Clone, Default)]
pub struct UserChanges {
    /// A new contact address.
    pub email: Option<String>,
    /// A new role.
    pub role: Option<Role>,
    /// A new password hash.
    pub password_hash: Option<String>,
    /// Activates (`true`) or deactivates (`false`) the user.
    pub is_active: Option<bool>,
}

/// Leaves the password hash out, so that logging `UserChanges` cannot leak it.
impl fmt::Debug for UserChanges {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("UserChanges")
            .field("email", &self.email)
            .field("role", &self.role)
            .field(
                "password_hash",
                &self.password_hash.as_ref().map(|_| "<redacted>"),
            )
            .field("is_active", &self.is_active)
            .finish()
    }
}

#[derive(sqlx::FromRow)]
struct UserRow {
    id: i64,
    username: String,
    email: String,
    role: String,
    is_active: bool,
    created_at: i64,
    updated_at: i64,
}

impl TryFrom<UserRow> for User {
    type Error = StorageError;

    fn try_from(row: UserRow) -> Result<Self, Self::Error> {
        let role = row
            .role
            .parse()
            .map_err(|_| StorageError::Corrupt(format!("user {}: role {}", row.id, row.role)))?;
        Ok(User {
            id: row.id,
            username: row.username,
            email: row.email,
            role,
            is_active: row.is_active,
            created_at: from_micros(row.created_at),
            updated_at: from_micros(row.updated_at),
        })
    }
}

#[derive(sqlx::FromRow)]
struct UserWithHashRow {
    #[sqlx(flatten)]
    user: UserRow,
    password_hash: String,
}

/// A unique violation on `users.username` as [`StorageError::Duplicate`]; anything else as
/// usual. Postgres names the constraint; SQLite names the column in its message.
fn user_error(err: sqlx::Error) -> StorageError {
    if let sqlx::Error::Database(db) = &err
        && db.is_unique_violation()
        && (db.constraint() == Some("users_username_key")
            || db.message().contains("users.username"))
    {
        return StorageError::Duplicate("username");
    }
    err.into()
}

impl Storage {
    /// Creates a user. Fails with [`StorageError::Duplicate`]`("username")` when the username
    /// is taken.
    pub async fn create_user(
        &self,
        user: &NewUser,
        now: DateTime<Utc>,
    ) -> Result<User, StorageError> {
        self.retrying_while_busy(|| self.create_user_once(user, now))
            .await
    }

    async fn create_user_once(
        &self,
        user: &NewUser,
        now: DateTime<Utc>,
    ) -> Result<User, StorageError> {
        let now = to_micros(now);
        let sql = format!(
            "INSERT INTO users (username, email, password_hash, role, is_active, created_at, \
             updated_at) VALUES ($1, $2, $3, $4, $5, $6, $7) RETURNING {USER_COLUMNS}"
        );
        let row = on_pool!(self, |pool| {
            sqlx::query_as::<Db, UserRow>(AssertSqlSafe(sql))
                .bind(user.username.as_str())
                .bind(user.email.as_str())
                .bind(user.password_hash.as_str())
                .bind(user.role.as_str())
                .bind(user.is_active)
                .bind(now)
                .bind(now)
                .fetch_one(pool)
                .await
                .map_err(user_error)?
        });
        User::try_from(row)
    }

    /// One user by id.
    pub async fn user_by_id(&self, id: i64) -> Result<Option<User>, StorageError> {
        let sql = format!("SELECT {USER_COLUMNS} FROM users WHERE id = $1");
        let row = on_pool!(self, |pool| {
            sqlx::query_as::<Db, UserRow>(AssertSqlSafe(sql))
                .bind(id)
                .fetch_optional(pool)
                .await?
        });
        row.map(User::try_from).transpose()
    }

    /// One user by exact (case-sensitive) username, with the stored password hash, for
    /// logging in; inactive users are returned too (the caller refuses them).
    pub async fn user_with_password_hash(
        &self,
        username: &str,
    ) -> Result<Option<(User, String)>, StorageError> {
        let sql = format!("SELECT {USER_COLUMNS}, password_hash FROM users WHERE username = $1");
        let row = on_pool!(self, |pool| {
            sqlx::query_as::<Db, UserWithHashRow>(AssertSqlSafe(sql))
                .bind(username)
                .fetch_optional(pool)
                .await?
        });
        row.map(|row| Ok((User::try_from(row.user)?, row.password_hash)))
            .transpose()
    }

    /// Users by id ascending, `limit` of them after skipping `offset` (a negative `limit` or
    /// `offset` counts as 0, on both engines).
    pub async fn list_users(&self, limit: i64, offset: i64) -> Result<Vec<User>, StorageError> {
        let sql = format!("SELECT {USER_COLUMNS} FROM users ORDER BY id ASC LIMIT $1 OFFSET $2");
        let rows = on_pool!(self, |pool| {
            sqlx::query_as::<Db, UserRow>(AssertSqlSafe(sql))
                .bind(limit.max(0))
                .bind(offset.max(0))
                .fetch_all(pool)
                .await?
        });
        rows.into_iter().map(User::try_from).collect()
    }

    /// How many users exist.
    pub async fn count_users(&self) -> Result<i64, StorageError> {
        let count = on_pool!(self, |pool| {
            sqlx::query_scalar::<Db, i64>("SELECT COUNT(*) FROM users")
                .fetch_one(pool)
                .await?
        });
        Ok(count)
    }

    /// Applies `changes` to a user and sets its `updated_at` to `now` (even when `changes` is
    /// empty). Returns the user as changed, or `None` when there is no such user.
    pub async fn update_user(
        &self,
        id: i64,
        changes: &UserChanges,
        now: DateTime<Utc>,
    ) -> Result<Option<User>, StorageError> {
        self.retrying_while_busy(|| self.update_user_once(id, changes, now))
            .await
    }

    async fn update_user_once(
        &self,
        id: i64,
        changes: &UserChanges,
        now: DateTime<Utc>,
    ) -> Result<Option<User>, StorageError> {
        let assignments: Vec<(&'static str, Value)> = [
            ("email", changes.email.clone().map(Value::from)),
            ("role", changes.role.map(|r| Value::from(r.as_str()))),
            (
                "password_hash",
                changes.password_hash.clone().map(Value::from),
            ),
            ("is_active", changes.is_active.map(Value::from)),
            ("updated_at", Some(Value::from(to_micros(now)))),
        ]
        .into_iter()
        .filter_map(|(column, value)| Some((column, value?)))
        .collect();
        let row = on_pool!(self, |pool| {
            let mut query = QueryBuilder::<Db>::new("UPDATE users");
            push_assignments(&mut query, assignments);
            query.push(" WHERE id = ").push_bind(id);
            query.push(format_args!(" RETURNING {USER_COLUMNS}"));
            query
                .build_query_as::<UserRow>()
                .fetch_optional(pool)
                .await
                .map_err(user_error)?
        });
        row.map(User::try_from).transpose()
    }

    /// Records that the refresh token `jti` is revoked until `expires_at`, when it would stop
    /// being valid anyway. Revoking a token twice is not an error.
    pub async fn revoke_token(
        &self,
        jti: &str,
        expires_at: DateTime<Utc>,
    ) -> Result<(), StorageError> {
        self.retrying_while_busy(|| self.revoke_token_once(jti, expires_at))
            .await
    }

    async fn revoke_token_once(
        &self,
        jti: &str,
        expires_at: DateTime<Utc>,
    ) -> Result<(), StorageError> {
        on_pool!(self, |pool| {
            sqlx::query::<Db>(
                "INSERT INTO revoked_tokens (jti, expires_at) VALUES ($1, $2) \
                 ON CONFLICT (jti) DO NOTHING",
            )
            .bind(jti)
            .bind(to_micros(expires_at))
            .execute(pool)
            .await?;
        });
        Ok(())
    }

    /// True when the token `jti` was revoked (and not yet purged).
    pub async fn is_token_revoked(&self, jti: &str) -> Result<bool, StorageError> {
        let count = on_pool!(self, |pool| {
            sqlx::query_scalar::<Db, i64>("SELECT COUNT(*) FROM revoked_tokens WHERE jti = $1")
                .bind(jti)
                .fetch_one(pool)
                .await?
        });
        Ok(count > 0)
    }

    /// Forgets revoked tokens that expired at or before `now` (they are refused as expired
    /// anyway; pass `now` minus any leeway the token check allows). Returns how many.
    pub async fn purge_revoked_tokens(&self, now: DateTime<Utc>) -> Result<u64, StorageError> {
        self.retrying_while_busy(|| self.purge_revoked_tokens_once(now))
            .await
    }

    async fn purge_revoked_tokens_once(&self, now: DateTime<Utc>) -> Result<u64, StorageError> {
        let purged = on_pool!(self, |pool| {
            sqlx::query::<Db>("DELETE FROM revoked_tokens WHERE expires_at <= $1")
                .bind(to_micros(now))
                .execute(pool)
                .await?
                .rows_affected()
        });
        Ok(purged)
    }
}
