//! Failed-login limits: per (username, client address) and per client address, counted in a
//! fixed window that starts at the first failure. Checked *before* the password, so while a
//! key is limited even the right password is refused (a guesser learns nothing).
//!
//! Written here rather than with a rate-limiting crate because it counts failures, not
//! requests. The counts live in this process: with several api instances behind a balancer
//! each keeps its own (see the README on scaling out).

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum Key {
    User(String, IpAddr),
    Address(IpAddr),
}

#[derive(Debug, Clone, Copy)]
struct Window {
    started: Instant,
    failures: u32,
}

/// Counts failed logins and says when to refuse.
#[derive(Debug)]
pub struct LoginLimiter {
    per_user: u32,
    per_address: u32,
    window: Duration,
    counts: Mutex<HashMap<Key, Window>>,
}

/// Entries kept before expired ones are swept.
const SWEEP_AT: usize = 10_000;

impl LoginLimiter {
    /// Allows `per_user` failures per (username, address) and `per_address` per address
    /// within `window`.
    pub fn new(per_user: u32, per_address: u32, window: Duration) -> Self {
        LoginLimiter {
            per_user,
            per_address,
            window,
            counts: Mutex::new(HashMap::new()),
        }
    }

    fn keys(username: &str, address: IpAddr) -> [(Key, bool); 2] {
        [
            (Key::User(username.to_owned(), address), true),
            (Key::Address(address), false),
        ]
    }

    /// `Some(seconds)` to wait when this login must be refused now.
    pub fn check(&self, username: &str, address: IpAddr, now: Instant) -> Option<u64> {
        let counts = self
            .counts
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let mut wait = None;
        for (key, per_user) in Self::keys(username, address) {
            let limit = if per_user {
                self.per_user
            } else {
                self.per_address
            };
            if let Some(window) = counts.get(&key) {
                let age = now.saturating_duration_since(window.started);
                if age < self.window && window.failures >= limit {
                    let left = (self.window - age).as_secs().max(1);
                    wait = Some(wait.map_or(left, |w: u64| w.max(left)));
                }
            }
        }
        wait
    }

    /// Records a failed login.
    pub fn failed(&self, username: &str, address: IpAddr, now: Instant) {
        let mut counts = self
            .counts
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if counts.len() >= SWEEP_AT {
            let window = self.window;
            counts.retain(|_, w| now.saturating_duration_since(w.started) < window);
        }
        for (key, _) in Self::keys(username, address) {
            let entry = counts.entry(key).or_insert(Window {
                started: now,
                failures: 0,
            });
            if now.saturating_duration_since(entry.started) >= self.window {
                *entry = Window {
                    started: now,
                    failures: 0,
                };
            }
            entry.failures += 1;
        }
    }

    /// Forgets the failures of (username, address) after a successful login.
    pub fn succeeded(&self, username: &str, address: IpAddr) {
        let mut counts = self
            .counts
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        counts.remove(&Key::User(username.to_owned(), address));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_eleventh_failure_is_refused_until_the_window_passes_and_other_addresses_are_not() {
        let limiter = LoginLimiter::new(10, 50, Duration::from_secs(900));
        let here: IpAddr = [10, 0, 0, 1].into();
        let there: IpAddr = [10, 0, 0, 2].into();
        let start = Instant::now();
        for _ in 0..10 {
            assert_eq!(limiter.check("alice", here, start), None);
            limiter.failed("alice", here, start);
        }
        assert_eq!(limiter.check("alice", here, start), Some(900));
        assert_eq!(limiter.check("alice", there, start), None);
        assert_eq!(limiter.check("bob", here, start), None);
        let later = start + Duration::from_secs(900);
        assert_eq!(limiter.check("alice", here, later), None);
    }

    #[test]
    fn many_usernames_from_one_address_hit_the_address_limit() {
        let limiter = LoginLimiter::new(10, 3, Duration::from_secs(60));
        let here: IpAddr = [10, 0, 0, 1].into();
        let now = Instant::now();
        for name in ["a", "b", "c"] {
            limiter.failed(name, here, now);
        }
        assert_eq!(limiter.check("d", here, now), Some(60));
    }
}
