//! One-time secrets: random tokens (links, sessions, tickets), their stored hashes, and the
//! hash a missing account is checked against.

use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64URL;
use base64::Engine;
use cairn_domain::Secret;
use rand::RngCore;
use sha2::{Digest, Sha256};

pub(crate) fn random_token() -> String {
    let mut b = [0u8; 32];
    rand::thread_rng().fill_bytes(&mut b);
    B64URL.encode(b)
}

pub fn token_hash(token: &str) -> String {
    hex::encode(Sha256::digest(token.as_bytes()))
}

/// A valid Argon2id hash of a random string, checked against when there is no user, so a
/// missing account costs the same time as a wrong password.
pub(crate) fn dummy_hash() -> Secret {
    static H: std::sync::LazyLock<Secret> = std::sync::LazyLock::new(|| {
        use argon2::password_hash::{rand_core::OsRng, PasswordHasher, SaltString};
        let salt = SaltString::generate(&mut OsRng);
        Secret::new(crate::password::argon2().hash_password(b"no such user", &salt).expect("hash").to_string())
    });
    H.clone()
}
