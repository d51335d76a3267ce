//! Object ids: 24 lowercase hex characters laid out like a MongoDB ObjectId (4 bytes of
//! seconds, 5 random bytes, a 3-byte counter), so they sort by creation time and existing
//! JumpCloud tooling recognises them.

/// Formats an id from its parts; the caller supplies time and randomness.
pub fn format_object_id(unix_secs: u32, random: [u8; 5], counter: u32) -> String {
    let mut bytes = [0u8; 12];
    bytes[..4].copy_from_slice(&unix_secs.to_be_bytes());
    bytes[4..9].copy_from_slice(&random);
    bytes[9..].copy_from_slice(&counter.to_be_bytes()[1..]);
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut out = String::with_capacity(24);
    for b in bytes {
        out.push(HEX[usize::from(b >> 4)] as char);
        out.push(HEX[usize::from(b & 0xf)] as char);
    }
    out
}

pub fn is_object_id(s: &str) -> bool {
    s.len() == 24 && s.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_24_hex_and_ordered_by_time() {
        let a = format_object_id(1_700_000_000, [9; 5], 0xffffff);
        let b = format_object_id(1_700_000_001, [0; 5], 0);
        assert_eq!(a.len(), 24);
        assert!(is_object_id(&a));
        assert!(a < b);
        assert!(!is_object_id("ABCDEF0123456789abcdef01"));
        assert!(!is_object_id("abc"));
    }
}
