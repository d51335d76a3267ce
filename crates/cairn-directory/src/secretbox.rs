//! Secrets at rest (TOTP seeds): XChaCha20-Poly1305 with the key from the data directory.

use base64::engine::general_purpose::STANDARD_NO_PAD as B64;
use base64::Engine;
use chacha20poly1305::aead::{Aead, AeadCore, KeyInit, OsRng};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};

use crate::error::{Error, Result};

pub fn seal(key: &[u8; 32], plaintext: &[u8]) -> String {
    let cipher = XChaCha20Poly1305::new(key.into());
    let nonce = XChaCha20Poly1305::generate_nonce(&mut OsRng);
    let ct = cipher.encrypt(&nonce, plaintext).expect("encryption does not fail for in-memory data");
    let mut out = nonce.to_vec();
    out.extend_from_slice(&ct);
    format!("v1:{}", B64.encode(out))
}

pub fn open(key: &[u8; 32], sealed: &str) -> Result<Vec<u8>> {
    let bad = || {
        Error::Internal(
            "a stored secret cannot be decrypted: is CAIRN_DATA_DIR's secret.key the one it was written with?".into(),
        )
    };
    let raw = sealed.strip_prefix("v1:").and_then(|b| B64.decode(b).ok()).ok_or_else(bad)?;
    if raw.len() < 24 {
        return Err(bad());
    }
    let (nonce, ct) = raw.split_at(24);
    XChaCha20Poly1305::new(key.into()).decrypt(XNonce::from_slice(nonce), ct).map_err(|_| bad())
}

#[cfg(test)]
mod tests {
    #[test]
    fn round_trip_and_tamper() {
        let key = [7u8; 32];
        let s = super::seal(&key, b"JBSWY3DPEHPK3PXP");
        assert!(!s.contains("JBSWY3DPEHPK3PXP"));
        assert_eq!(super::open(&key, &s).unwrap(), b"JBSWY3DPEHPK3PXP");
        assert!(super::open(&[8u8; 32], &s).is_err());
        let mut t = s.clone();
        t.pop();
        t.push('A');
        assert!(super::open(&key, &t).is_err() || t == s);
    }
}
