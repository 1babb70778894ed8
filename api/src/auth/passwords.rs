//! Passwords: argon2id with OWASP's parameters, hashed and verified on the blocking pool
//! (each takes megabytes and tens of milliseconds: never on the async executor), at most a
//! few at a time so that a login storm cannot exhaust memory.
//!
//! The argon2 working memory is allocated once per slot and reused: allocating ~12 MiB for
//! every login left each blocking thread's malloc arena holding its own copy (the api
//! peaked near 500 MiB under a login benchmark).

use std::sync::{Arc, Mutex};

use argon2::password_hash::{Output, ParamsString, PasswordHash, SaltString};
use argon2::{Algorithm, Argon2, Block, Params, Version};
use tokio::sync::Semaphore;

use crate::error::{ApiError, OrInternal};

/// Shortest password accepted (Django's default `MinimumLengthValidator`).
pub const MIN_PASSWORD_CHARS: usize = 8;

/// argon2id cost for new hashes: OWASP's m=12 MiB, t=3, p=1 (as strong as its 19 MiB, t=2
/// option, with less memory per login). Hashes made with other parameters still verify.
const MEMORY_KIB: u32 = 12 * 1024;
const ITERATIONS: u32 = 3;

/// Hashes and verifies passwords, a bounded number at a time.
#[derive(Clone)]
pub struct Passwords {
    params: Params,
    slots: Arc<Semaphore>,
    /// Working memory of finished hashes, for the next one (at most one per slot).
    memory: Arc<Mutex<Vec<Vec<Block>>>>,
    decoy: Arc<String>,
}

impl std::fmt::Debug for Passwords {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Passwords")
    }
}

/// Computes argon2id of `password` with `params` and raw `salt` into `out`, in `memory`
/// (resized when the parameters need another size).
fn argon2id_into(
    params: &Params,
    password: &[u8],
    salt: &[u8],
    out: &mut [u8],
    memory: &mut Vec<Block>,
) -> Result<(), argon2::Error> {
    if memory.len() != params.block_count() {
        *memory = vec![Block::default(); params.block_count()];
    }
    Argon2::new(Algorithm::Argon2id, Version::V0x13, params.clone()).hash_password_into_with_memory(
        password,
        salt,
        out,
        memory.as_mut_slice(),
    )
}

impl Passwords {
    /// At most `concurrency` hashes at once.
    pub fn new(concurrency: usize) -> Result<Self, ApiError> {
        let params = Params::new(MEMORY_KIB, ITERATIONS, 1, None).or_internal()?;
        let mut passwords = Passwords {
            params,
            slots: Arc::new(Semaphore::new(concurrency.max(1))),
            memory: Arc::new(Mutex::new(Vec::new())),
            decoy: Arc::new(String::new()),
        };
        let decoy = passwords.hash_now(&uuid::Uuid::new_v4().to_string())?;
        passwords.decoy = Arc::new(decoy);
        Ok(passwords)
    }

    /// Runs `work` with a slot's working memory, returning the memory afterwards.
    fn with_memory<T>(&self, work: impl FnOnce(&mut Vec<Block>) -> T) -> T {
        let reused = self.memory.lock().ok().and_then(|mut pool| pool.pop());
        let mut memory = reused.unwrap_or_default();
        let result = work(&mut memory);
        if let Ok(mut pool) = self.memory.lock() {
            pool.push(memory);
        }
        result
    }

    /// Hashes on this thread (blocking).
    fn hash_now(&self, password: &str) -> Result<String, ApiError> {
        let salt = SaltString::generate(&mut argon2::password_hash::rand_core::OsRng);
        let mut raw_salt = [0u8; 64];
        let raw_salt = salt.decode_b64(&mut raw_salt).or_internal()?;
        let mut out = [0u8; Params::DEFAULT_OUTPUT_LEN];
        self.with_memory(|memory| {
            argon2id_into(
                &self.params,
                password.as_bytes(),
                raw_salt,
                &mut out,
                memory,
            )
        })
        .or_internal()?;
        let hash = PasswordHash {
            algorithm: Algorithm::Argon2id.ident(),
            version: Some(Version::V0x13.into()),
            params: ParamsString::try_from(&self.params).or_internal()?,
            salt: Some(salt.as_salt()),
            hash: Some(Output::new(&out).or_internal()?),
        };
        Ok(hash.to_string())
    }

    /// Verifies on this thread (blocking); false for a hash that is not argon2id.
    fn verify_now(&self, password: &str, hash: &str) -> bool {
        let Ok(parsed) = PasswordHash::new(hash) else {
            return false;
        };
        if parsed.algorithm != Algorithm::Argon2id.ident() {
            return false;
        }
        let (Ok(params), Some(salt), Some(expected)) =
            (Params::try_from(&parsed), parsed.salt, parsed.hash)
        else {
            return false;
        };
        let mut raw_salt = [0u8; 64];
        let Ok(raw_salt) = salt.decode_b64(&mut raw_salt) else {
            return false;
        };
        let mut out = vec![0u8; expected.len()];
        let computed = self.with_memory(|memory| {
            argon2id_into(&params, password.as_bytes(), raw_salt, &mut out, memory)
        });
        // Output's equality is constant-time.
        computed.is_ok() && Output::new(&out).is_ok_and(|out| out == expected)
    }

    /// Hashes a password (PHC string with its salt and parameters).
    pub async fn hash(&self, password: &str) -> Result<String, ApiError> {
        let _slot = self.slots.acquire().await.or_internal()?;
        let this = self.clone();
        let password = password.to_owned();
        tokio::task::spawn_blocking(move || this.hash_now(&password))
            .await
            .or_internal()?
    }

    /// True when `password` matches `hash`. With no hash (unknown user) a decoy is verified
    /// so that the answer takes as long, and false is returned.
    pub async fn verify(&self, password: &str, hash: Option<&str>) -> Result<bool, ApiError> {
        let _slot = self.slots.acquire().await.or_internal()?;
        let this = self.clone();
        let known = hash.is_some();
        let hash = hash.map_or_else(|| self.decoy.as_str().to_owned(), str::to_owned);
        let password = password.to_owned();
        let matches = tokio::task::spawn_blocking(move || this.verify_now(&password, &hash))
            .await
            .or_internal()?;
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
    async fn hashes_made_with_other_parameters_still_verify() {
        use argon2::password_hash::PasswordHasher;
        // What earlier versions stored: m=19 MiB, t=2.
        let legacy = Argon2::new(
            Algorithm::Argon2id,
            Version::V0x13,
            Params::new(19 * 1024, 2, 1, None).unwrap(),
        );
        let salt = SaltString::generate(&mut argon2::password_hash::rand_core::OsRng);
        let hash = legacy
            .hash_password(b"correct horse", &salt)
            .unwrap()
            .to_string();
        let passwords = Passwords::new(1).unwrap();
        assert!(
            passwords
                .verify("correct horse", Some(&hash))
                .await
                .unwrap()
        );
        assert!(!passwords.verify("wrong horse", Some(&hash)).await.unwrap());
        // And the reused memory still gives right answers with the usual parameters.
        let current = passwords.hash("correct horse").await.unwrap();
        assert!(
            passwords
                .verify("correct horse", Some(&current))
                .await
                .unwrap()
        );
        assert!(
            !passwords
                .verify(
                    "correct horse",
                    Some("$argon2i$v=19$m=8,t=1,p=1$c2FsdHNhbHQ$aGFzaA")
                )
                .await
                .unwrap()
        );
    }

    #[tokio::test]
    async fn a_hash_verifies_its_password_only_and_is_argon2id() {
        let passwords = Passwords::new(2).unwrap();
        let hash = passwords.hash("correct horse").await.unwrap();
        assert!(
            hash.starts_with("$argon2id$v=19$m=12288,t=3,p=1$"),
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
