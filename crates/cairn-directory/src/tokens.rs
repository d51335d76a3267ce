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

/// Length of a link token: an object id, then a random token.
const LINK_TOKEN_LEN: usize = 24 + 43;

/// A one-time link's token: `id` (a new object id, so ordered by time) in front of 32 random
/// bytes. Its key (`link_key`) starts with the id, so the links a large import writes are
/// appended to the key index instead of scattered through it: at 1,000,000 users a random key
/// doubled the import's time.
pub(crate) fn link_token(id: &str) -> String {
    debug_assert!(cairn_domain::id::is_object_id(id));
    format!("{id}{}", random_token())
}

/// The stored key of a link token: its id in clear, then the hash of the whole token (the id
/// alone finds nothing). Tokens issued before links carried an id are keyed by their hash.
pub(crate) fn link_key(token: &str) -> String {
    match token.get(..24).filter(|id| token.len() == LINK_TOKEN_LEN && cairn_domain::id::is_object_id(id)) {
        Some(id) => format!("{id}{}", token_hash(token)),
        None => token_hash(token),
    }
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn link_keys_lead_with_the_id_and_hash_the_whole_token() {
        let id = "0123456789abcdef01234567";
        let t = link_token(id);
        assert_eq!(t.len(), LINK_TOKEN_LEN);
        let k = link_key(&t);
        assert_eq!(&k[..24], id);
        assert_eq!(&k[24..], token_hash(&t));
        // Another token of the same id has another key; a link's id alone is no key.
        assert_ne!(link_key(&link_token(id)), k);
        assert_ne!(link_key(id), k);
        // Keys are ordered as their ids are.
        assert!(link_key(&link_token("0123456789abcdef01234568")) > k);
        // A token from before links carried an id: its hash, as then.
        let old = random_token();
        assert_eq!(link_key(&old), token_hash(&old));
        // Tampered: the same length, the id's part not hex.
        let bad = format!("ZZ{}", &t[2..]);
        assert_eq!(link_key(&bad), token_hash(&bad));
    }
}
