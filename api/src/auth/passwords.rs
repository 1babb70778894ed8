//! Passwords: argon2id with OWASP's parameters, hashed and verified on the blocking pool
//! (each takes ~20 MiB and tens of milliseconds: never on the async executor), at most a
//! few at a time so that a login storm cannot exhaust memory.

use std::sync::Arc;

use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::{Algorithm, Argon2, Params, Version};
use tokio::sync::Semaphore;

use crate::error::ApiError;

/// Shortest password accepted.
pub const MIN_PASSWORD_CHARS: usize = 8;

/// Hashes and verifies passwords.
#[derive(Clone)]
pub struct Passwords {
    argon2: Argon2<'static>,
    slots: Arc<Semaphore>,
    /// A hash of nothing anybody knows: verifying an unknown user's login against it costs
    /// the same time as a wrong password, so timing does not reveal which usernames exist.
    decoy: Arc<String>,
}

impl std::fmt::Debug for Passwords {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Passwords")
    }
}

fn argon2id() -> Result<Argon2<'static>, ApiError> {
    // OWASP Password Storage Cheat Sheet: m=19 MiB, t=2, p=1.
    let params = Params::new(19 * 1024, 2, 1, None).map_err(ApiError::internal)?;
    Ok(Argon2::new(Algorithm::Argon2id, Version::V0x13, params))
}

fn hash_with(argon2: &Argon2<'static>, password: &str) -> Result<String, ApiError> {
    let salt = SaltString::generate(&mut argon2::password_hash::rand_core::OsRng);
    argon2
        .hash_password(password.as_bytes(), &salt)
        .map(|hash| hash.to_string())
        .map_err(ApiError::internal)
}

impl Passwords {
    /// Sets up hashing; `concurrency` hashes may run at once.
    pub fn new(concurrency: usize) -> Result<Self, ApiError> {
        let argon2 = argon2id()?;
        let decoy = hash_with(&argon2, &uuid::Uuid::new_v4().to_string())?;
        Ok(Passwords {
            argon2,
            slots: Arc::new(Semaphore::new(concurrency.max(1))),
            decoy: Arc::new(decoy),
        })
    }

    /// Hashes a password (PHC string with its salt and parameters).
    pub async fn hash(&self, password: &str) -> Result<String, ApiError> {
        let _slot = self.slots.acquire().await.map_err(ApiError::internal)?;
        let argon2 = self.argon2.clone();
        let password = password.to_owned();
        tokio::task::spawn_blocking(move || hash_with(&argon2, &password))
            .await
            .map_err(ApiError::internal)?
    }

    /// True when `password` matches `hash`; with no hash (unknown user) verifies against
    /// the decoy and returns false, taking the same time.
    pub async fn verify(&self, password: &str, hash: Option<&str>) -> Result<bool, ApiError> {
        let _slot = self.slots.acquire().await.map_err(ApiError::internal)?;
        let argon2 = self.argon2.clone();
        let known = hash.is_some();
        let hash = hash.map_or_else(|| self.decoy.as_str().to_owned(), str::to_owned);
        let password = password.to_owned();
        let matches = tokio::task::spawn_blocking(move || {
            PasswordHash::new(&hash)
                .map(|parsed| argon2.verify_password(password.as_bytes(), &parsed).is_ok())
                .unwrap_or(false)
        })
        .await
        .map_err(ApiError::internal)?;
        Ok(known && matches)
    }
}

/// Why a password is refused, in Django's words.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PasswordPolicyError {
    /// Shorter than [`MIN_PASSWORD_CHARS`].
    #[error("This password is too short. It must contain at least 8 characters.")]
    TooShort,
    /// The username itself (any case).
    #[error("The password is too similar to the username.")]
    SameAsUsername,
}

/// Checks a new password against the policy.
pub fn check_password_policy(password: &str, username: &str) -> Result<(), PasswordPolicyError> {
    if password.chars().count() < MIN_PASSWORD_CHARS {
        Err(PasswordPolicyError::TooShort)
    } else if password.eq_ignore_ascii_case(username) {
        Err(PasswordPolicyError::SameAsUsername)
    } else {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_hash_verifies_its_password_only_and_is_argon2id() {
        let passwords = Passwords::new(2).unwrap();
        let hash = passwords.hash("correct horse").await.unwrap();
        assert!(
            hash.starts_with("$argon2id$v=19$m=19456,t=2,p=1$"),
            "{hash}"
        );
        assert!(
            passwords
                .verify("correct horse", Some(&hash))
                .await
                .unwrap()
        );
        assert!(!passwords.verify("wrong horse", Some(&hash)).await.unwrap());
        assert!(!passwords.verify("correct horse", None).await.unwrap());
    }

    #[test]
    fn the_policy_refuses_short_passwords_and_the_username() {
        assert_eq!(
            check_password_policy("short", "bob"),
            Err(PasswordPolicyError::TooShort)
        );
        assert_eq!(
            check_password_policy("Analyst01", "analyst01"),
            Err(PasswordPolicyError::SameAsUsername)
        );
        assert_eq!(check_password_policy("long enough", "bob"), Ok(()));
    }
}
