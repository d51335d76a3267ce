//! Argon2id hashing on a bounded blocking pool, so a burst of logins never stalls the async
//! workers and memory stays bounded (19 MiB per hash in flight).

use std::sync::Arc;

use argon2::password_hash::rand_core::OsRng;
use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::{Algorithm, Argon2, Params, Version};
use cairn_domain::Secret;
use tokio::sync::Semaphore;

use crate::error::{Error, Result};

#[derive(Clone)]
pub struct Hasher {
    permits: Arc<Semaphore>,
}

/// OWASP's Argon2id parameters: 19 MiB, 2 iterations, 1 lane.
pub fn argon2() -> Argon2<'static> {
    Argon2::new(Algorithm::Argon2id, Version::V0x13, Params::new(19 * 1024, 2, 1, None).expect("argon2 params"))
}

impl Default for Hasher {
    fn default() -> Self {
        Self::new()
    }
}

impl Hasher {
    pub fn new() -> Hasher {
        let n = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(2);
        Hasher { permits: Arc::new(Semaphore::new(n)) }
    }

    pub async fn hash(&self, password: &Secret) -> Result<Secret> {
        let _permit = self.permits.acquire().await.map_err(|_| Error::Internal("hasher closed".into()))?;
        let pw = password.clone();
        tokio::task::spawn_blocking(move || {
            let salt = SaltString::generate(&mut OsRng);
            argon2()
                .hash_password(pw.expose().as_bytes(), &salt)
                .map(|h| Secret::new(h.to_string()))
                .map_err(|e| Error::Internal(format!("hashing failed: {e}")))
        })
        .await
        .map_err(|e| Error::Internal(format!("hashing task failed: {e}")))?
    }

    /// Constant-time verification against a stored PHC string.
    pub async fn verify(&self, password: &Secret, hash: &Secret) -> Result<bool> {
        let _permit = self.permits.acquire().await.map_err(|_| Error::Internal("hasher closed".into()))?;
        let pw = password.clone();
        let hash = hash.clone();
        tokio::task::spawn_blocking(move || {
            let parsed = PasswordHash::new(hash.expose())
                .map_err(|e| Error::Internal(format!("stored hash unreadable: {e}")))?;
            Ok(argon2().verify_password(pw.expose().as_bytes(), &parsed).is_ok())
        })
        .await
        .map_err(|e| Error::Internal(format!("verify task failed: {e}")))?
    }
}
