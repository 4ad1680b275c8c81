//! Passwords: what an acceptable one is, and hashing them with Argon2id.
//!
//! **Parameters**: Argon2id (version 0x13), 19 MiB of memory (`m = 19456`
//! KiB), 2 passes (`t = 2`), 1 lane (`p = 1`), a 16-byte random salt and a
//! 32-byte output, stored as a PHC string (`$argon2id$v=19$m=19456,t=2,p=1$…`).
//! This is the first of OWASP's recommended Argon2id settings (Password
//! Storage Cheat Sheet) and RFC 9106's memory-hard construction:
//!
//! - memory-hard: each guess needs 19 MiB written and read twice, which is
//!   what makes GPUs and ASICs expensive guessers;
//! - one lane: the server hashes on one core per sign-in, so a burst of
//!   sign-ins cannot take every core (and at most
//!   [`CONCURRENT_HASHES`] run at once, 38 MiB in all; the rest wait);
//! - small enough that a sign-in answers well within a second on the
//!   2-core machines tether runs on.
//!
//! The parameters are in every stored hash, so they can be raised later
//! without breaking existing passwords (a verify uses the stored ones).
//! [`PasswordCost::TESTS_ONLY`] (set through [`Config::password_cost`])
//! is Argon2id's cheapest setting, for tests that make hundreds of
//! accounts; the configuration file cannot choose it.
//!
//! [`Config::password_cost`]: crate::Config::password_cost
//!
//! An unknown email is verified against a dummy hash with the same
//! parameters, so the answer takes as long as for a known one.

use std::sync::{Arc, LazyLock};

use argon2::password_hash::PasswordHasher as _;
use argon2::{Algorithm, Argon2, Params, PasswordVerifier as _, Version};
use tokio::sync::Semaphore;

/// Argon2id memory in KiB (19 MiB).
pub const MEMORY_KIB: u32 = 19 * 1024;
/// Argon2id passes.
pub const PASSES: u32 = 2;
/// Argon2id lanes.
pub const LANES: u32 = 1;
/// Password hashes computed at once, at most.
pub const CONCURRENT_HASHES: usize = 2;
/// Shortest acceptable password, in characters (NIST SP 800-63B).
pub const MIN_PASSWORD_CHARS: usize = 8;
/// Longest acceptable password, in characters.
pub const MAX_PASSWORD_CHARS: usize = 128;
/// Longest acceptable email address, in bytes (RFC 5321's path limit).
pub const MAX_EMAIL_BYTES: usize = 254;

/// The cost of new password hashes: Argon2id's memory and passes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PasswordCost {
    memory_kib: u32,
    passes: u32,
}

impl PasswordCost {
    /// [`MEMORY_KIB`] and [`PASSES`] (OWASP's first recommended Argon2id
    /// setting): the default, and the only cost a configuration file gives.
    pub const STANDARD: PasswordCost = PasswordCost {
        memory_kib: MEMORY_KIB,
        passes: PASSES,
    };
    /// Argon2id's cheapest setting (8 KiB, one pass), **for tests only**:
    /// a test that makes many accounts spends its time on what it tests,
    /// not on hashing. Never for real passwords.
    pub const TESTS_ONLY: PasswordCost = PasswordCost {
        memory_kib: 8,
        passes: 1,
    };
}

impl Default for PasswordCost {
    fn default() -> Self {
        PasswordCost::STANDARD
    }
}

fn argon2() -> Argon2<'static> {
    argon2_at(PasswordCost::STANDARD)
}

fn argon2_at(cost: PasswordCost) -> Argon2<'static> {
    // Both costs are valid parameters; `DEFAULT` is the fallback the
    // compiler needs and equals the standard one.
    let params = Params::new(cost.memory_kib, cost.passes, LANES, None).unwrap_or(Params::DEFAULT);
    Argon2::new(Algorithm::Argon2id, Version::V0x13, params)
}

/// A hash no password matches (nobody knows the random one it was made
/// from), verified against for unknown emails.
static DUMMY_HASH: LazyLock<Option<String>> = LazyLock::new(|| {
    let password = crate::auth::generate_secret("");
    argon2()
        .hash_password(password.as_bytes())
        .ok()
        .map(|hash| hash.to_string())
});

/// Why a password or email is not acceptable; the text says what to do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unacceptable(pub &'static str);

/// An email address as stored: trimmed, lower case, if it looks like one
/// (one `@`, something on both sides, a dot in the domain, no spaces).
pub fn normalize_email(email: &str) -> Result<String, Unacceptable> {
    let email = email.trim().to_lowercase();
    let valid = email.len() <= MAX_EMAIL_BYTES
        && !email.chars().any(|c| c.is_whitespace() || c.is_control())
        && email.split_once('@').is_some_and(|(local, domain)| {
            !local.is_empty()
                && !domain.contains('@')
                && domain.contains('.')
                && !domain.starts_with('.')
                && !domain.ends_with('.')
        });
    if valid {
        Ok(email)
    } else {
        Err(Unacceptable(
            "Enter your email address, like name@example.com.",
        ))
    }
}

/// Whether a new password is acceptable.
pub fn check_new_password(password: &str) -> Result<(), Unacceptable> {
    let chars = password.chars().count();
    if chars < MIN_PASSWORD_CHARS {
        return Err(Unacceptable("Choose a password of at least 8 characters."));
    }
    if chars > MAX_PASSWORD_CHARS {
        return Err(Unacceptable("Choose a password of at most 128 characters."));
    }
    Ok(())
}

/// Hashes and verifies passwords on the blocking pool, at most
/// [`CONCURRENT_HASHES`] at once.
#[derive(Debug, Clone)]
pub(crate) struct Passwords {
    permits: Arc<Semaphore>,
    cost: PasswordCost,
}

impl Default for Passwords {
    fn default() -> Self {
        Passwords::new(PasswordCost::STANDARD)
    }
}

impl Passwords {
    /// New hashes at `cost`.
    pub(crate) fn new(cost: PasswordCost) -> Self {
        Passwords {
            permits: Arc::new(Semaphore::new(CONCURRENT_HASHES)),
            cost,
        }
    }

    /// The PHC string of `password` with a fresh salt.
    pub(crate) async fn hash(&self, password: String) -> Option<String> {
        let _permit = self.permits.acquire().await.ok()?;
        let cost = self.cost;
        tokio::task::spawn_blocking(move || {
            argon2_at(cost)
                .hash_password(password.as_bytes())
                .ok()
                .map(|hash| hash.to_string())
        })
        .await
        .ok()
        .flatten()
    }

    /// Whether `password` matches `stored` (a PHC string); `None`: check
    /// against the dummy hash (an unknown email), which never matches but
    /// takes as long.
    pub(crate) async fn verify(&self, password: String, stored: Option<String>) -> bool {
        let Ok(_permit) = self.permits.acquire().await else {
            return false;
        };
        tokio::task::spawn_blocking(move || {
            let known = stored.is_some();
            let Some(hash) = stored.or_else(|| DUMMY_HASH.clone()) else {
                return false;
            };
            let matches = argon2()
                .verify_password(password.as_bytes(), hash.as_str())
                .is_ok();
            known && matches
        })
        .await
        .unwrap_or(false)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn emails_are_normalised_or_refused() {
        assert_eq!(
            normalize_email("  Ada@Example.COM "),
            Ok("ada@example.com".to_owned())
        );
        for bad in [
            "",
            "ada",
            "@example.com",
            "ada@",
            "ada@example",
            "ada@@example.com",
            "a da@example.com",
            "ada@.example.com",
            "ada@example.com.",
        ] {
            assert!(normalize_email(bad).is_err(), "{bad:?}");
        }
        let long = format!("{}@example.com", "a".repeat(250));
        assert!(normalize_email(&long).is_err());
    }

    #[test]
    fn new_passwords_have_a_length_range() {
        assert!(check_new_password("short").is_err());
        assert!(check_new_password("12345678").is_ok());
        assert!(check_new_password("ünïcødé!").is_ok());
        assert!(check_new_password(&"x".repeat(128)).is_ok());
        assert!(check_new_password(&"x".repeat(129)).is_err());
    }

    #[tokio::test]
    async fn hashes_verify_and_state_their_parameters() {
        let passwords = Passwords::default();
        let hash = passwords
            .hash("correct horse".to_owned())
            .await
            .expect("hashes");
        assert!(
            hash.starts_with("$argon2id$v=19$m=19456,t=2,p=1$"),
            "{hash}"
        );
        assert!(
            passwords
                .verify("correct horse".to_owned(), Some(hash.clone()))
                .await
        );
        assert!(
            !passwords
                .verify("correct horsE".to_owned(), Some(hash.clone()))
                .await
        );
        // The same password hashes differently (salted).
        let again = passwords
            .hash("correct horse".to_owned())
            .await
            .expect("hashes");
        assert_ne!(hash, again);
        // Unknown email: never matches, whatever the password.
        assert!(!passwords.verify("correct horse".to_owned(), None).await);
        // A damaged stored hash does not match (and does not panic).
        assert!(
            !passwords
                .verify("x".to_owned(), Some("$argon2id$garbage".to_owned()))
                .await
        );
    }

    /// A cheap hash states its own parameters, and any instance verifies
    /// it by them (as a standard hash is verified by a test server).
    #[tokio::test]
    async fn the_tests_only_cost_is_in_its_hashes_and_verifies_anywhere() {
        let cheap = Passwords::new(PasswordCost::TESTS_ONLY);
        let hash = cheap
            .hash("correct horse".to_owned())
            .await
            .expect("hashes");
        assert!(hash.starts_with("$argon2id$v=19$m=8,t=1,p=1$"), "{hash}");
        let standard = Passwords::default();
        assert!(
            standard
                .verify("correct horse".to_owned(), Some(hash.clone()))
                .await
        );
        assert!(
            !standard
                .verify("correct horsE".to_owned(), Some(hash))
                .await
        );
        let strong = standard
            .hash("correct horse".to_owned())
            .await
            .expect("hashes");
        assert!(cheap.verify("correct horse".to_owned(), Some(strong)).await);
    }

    proptest::proptest! {
        #[test]
        fn any_text_is_handled_without_panic(text in ".{0,300}") {
            let _ = normalize_email(&text);
            let _ = check_new_password(&text);
        }
    }
}
