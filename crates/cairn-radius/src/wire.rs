//! The bytes on the wire: the Message-Authenticator (RFC 3579 §3.2, HMAC-MD5 over the packet
//! with the attribute zeroed and, in a reply, the request's authenticator) that the `radius`
//! crate does not compute, replies with it first (Blast-RADIUS, CVE-2024-3596), and a small
//! client side for tests and benchmarks.

use hmac::{Hmac, Mac};
use md5::Md5;
pub use radius::core::code::Code;
use radius::core::packet::Packet;
use radius::core::{rfc2865, rfc2869};
use subtle::ConstantTimeEq;

pub const MESSAGE_AUTHENTICATOR: u8 = 80;
const HEADER: usize = 20;
/// RFC 2865 §3: the largest packet.
pub const MAX_PACKET: usize = 4096;

/// Where the attributes of type `t` start (their type octet), walking the packet's own
/// lengths; `None` when the attributes do not add up to the header's length.
fn attribute_offsets(packet: &[u8], t: u8) -> Option<Vec<usize>> {
    let len = declared_len(packet)?;
    let mut at = HEADER;
    let mut found = Vec::new();
    while at < len {
        let l = *packet.get(at + 1)? as usize;
        if l < 2 || at + l > len {
            return None;
        }
        if packet[at] == t {
            found.push(at);
        }
        at += l;
    }
    Some(found)
}

/// The header's length when it is within the datagram and RFC 2865's bounds.
fn declared_len(packet: &[u8]) -> Option<usize> {
    if packet.len() < HEADER {
        return None;
    }
    let len = u16::from_be_bytes([packet[2], packet[3]]) as usize;
    (HEADER..=MAX_PACKET).contains(&len).then_some(len).filter(|l| *l <= packet.len())
}

/// HMAC-MD5 of `packet` (its declared length) with the Message-Authenticator at `at` zeroed
/// and, when given, `authenticator` in place of the header's.
fn compute(packet: &[u8], at: usize, authenticator: Option<&[u8]>, secret: &[u8]) -> [u8; 16] {
    let len = declared_len(packet).unwrap_or(packet.len());
    let mut copy = packet[..len].to_vec();
    if let Some(a) = authenticator {
        copy[4..HEADER].copy_from_slice(a);
    }
    copy[at + 2..at + 18].fill(0);
    let mut mac = <Hmac<Md5> as Mac>::new_from_slice(secret).expect("HMAC takes any key length");
    mac.update(&copy);
    mac.finalize().into_bytes().into()
}

/// Why a request's Message-Authenticator does not do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MaProblem {
    Missing,
    /// Repeated, or not 16 octets.
    Malformed,
    /// Not what the shared secret gives: a wrong secret, or a forged or altered packet.
    Wrong,
}

/// Checks a request's Message-Authenticator in constant time. `Err(Malformed)` also when the
/// attributes do not parse.
pub fn verify_request(packet: &[u8], secret: &[u8]) -> Result<(), MaProblem> {
    let offsets = attribute_offsets(packet, MESSAGE_AUTHENTICATOR).ok_or(MaProblem::Malformed)?;
    let at = match offsets.as_slice() {
        [] => return Err(MaProblem::Missing),
        [at] => *at,
        _ => return Err(MaProblem::Malformed),
    };
    if packet[at + 1] != 18 {
        return Err(MaProblem::Malformed);
    }
    let expected = compute(packet, at, None, secret);
    if bool::from(expected.ct_eq(&packet[at + 2..at + 18])) {
        Ok(())
    } else {
        Err(MaProblem::Wrong)
    }
}

/// A reply: Message-Authenticator first, then `attrs` (type, value) in order, with the
/// Response Authenticator over all of it.
pub fn reply(request: &Packet, code: Code, attrs: &[(u8, Vec<u8>)]) -> Result<Vec<u8>, String> {
    let build = |ma: &[u8]| {
        let mut p = request.make_response_packet(code);
        rfc2869::add_message_authenticator(&mut p, ma);
        for (t, v) in attrs {
            p.add(radius::core::avp::AVP::from_bytes(*t, v));
        }
        p
    };
    let draft = build(&[0u8; 16]).encode().map_err(|e| e.to_string())?;
    let ma = compute(&draft, HEADER, Some(request.get_authenticator()), request.get_secret());
    build(&ma).encode().map_err(|e| e.to_string())
}

// ---- the client side (tests, benchmarks) --------------------------------------------------

/// An Access-Request as a NAS sends it, PAP; with a Message-Authenticator first unless
/// `message_authenticator` is false.
pub struct Request<'a> {
    pub id: u8,
    pub secret: &'a [u8],
    pub user: &'a str,
    pub password: &'a [u8],
    pub state: Option<&'a [u8]>,
    pub nas_identifier: Option<&'a str>,
    pub message_authenticator: bool,
}

impl Request<'_> {
    /// The datagram, and the request authenticator to check the reply against.
    pub fn encode(&self) -> (Vec<u8>, Vec<u8>) {
        let mut p = Packet::new_with_identifier(Code::AccessRequest, self.secret, self.id);
        if self.message_authenticator {
            rfc2869::add_message_authenticator(&mut p, &[0u8; 16]);
        }
        rfc2865::add_user_name(&mut p, self.user);
        rfc2865::add_user_password(&mut p, self.password).expect("a password of at most 128 bytes");
        if let Some(s) = self.state {
            rfc2865::add_state(&mut p, s);
        }
        if let Some(n) = self.nas_identifier {
            rfc2865::add_nas_identifier(&mut p, n);
        }
        let mut bytes = p.encode().expect("an Access-Request encodes");
        if self.message_authenticator {
            let ma = compute(&bytes, HEADER, None, self.secret);
            bytes[HEADER + 2..HEADER + 18].copy_from_slice(&ma);
        }
        (bytes, p.get_authenticator().clone())
    }
}

/// A reply as a NAS reads it.
#[derive(Debug, Clone, PartialEq)]
pub struct Reply {
    pub code: Code,
    pub id: u8,
    pub reply_message: Option<String>,
    pub state: Option<Vec<u8>>,
    /// The Message-Authenticator is the first attribute.
    pub message_authenticator_first: bool,
}

/// Checks a reply as a careful NAS does: the Response Authenticator, and a valid
/// Message-Authenticator; `Err` says what is wrong.
pub fn read_reply(reply: &[u8], request: &[u8], secret: &[u8]) -> Result<Reply, String> {
    if !Packet::is_authentic_response(reply, request, secret) {
        return Err("the Response Authenticator does not match".into());
    }
    let offsets = attribute_offsets(reply, MESSAGE_AUTHENTICATOR).ok_or("the attributes do not parse")?;
    let [at] = offsets.as_slice() else { return Err(format!("{} Message-Authenticators", offsets.len())) };
    let expected = compute(reply, *at, Some(&request[4..HEADER]), secret);
    if expected[..] != reply[*at + 2..*at + 18] {
        return Err("the Message-Authenticator does not match".into());
    }
    let p = Packet::decode(reply, secret).map_err(|e| e.to_string())?;
    Ok(Reply {
        code: p.get_code(),
        id: p.get_identifier(),
        reply_message: rfc2865::lookup_reply_message(&p).and_then(Result::ok),
        state: rfc2865::lookup_state(&p),
        message_authenticator_first: *at == HEADER,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECRET: &[u8] = b"a shared secret of some length";

    fn request(ma: bool) -> (Vec<u8>, Vec<u8>) {
        Request {
            id: 7,
            secret: SECRET,
            user: "ada",
            password: b"correct horse",
            state: None,
            nas_identifier: Some("ap-1"),
            message_authenticator: ma,
        }
        .encode()
    }

    #[test]
    fn a_request_verifies_only_with_its_secret_and_unaltered() {
        let (bytes, _) = request(true);
        assert_eq!(verify_request(&bytes, SECRET), Ok(()));
        assert_eq!(verify_request(&bytes, b"another secret entirely"), Err(MaProblem::Wrong));
        let mut altered = bytes.clone();
        let last = altered.len() - 1;
        altered[last] ^= 1;
        assert_eq!(verify_request(&altered, SECRET), Err(MaProblem::Wrong));
        assert_eq!(verify_request(&request(false).0, SECRET), Err(MaProblem::Missing));
        assert_eq!(verify_request(&bytes[..10], SECRET), Err(MaProblem::Malformed));
        let mut bad_len = bytes.clone();
        bad_len[HEADER + 1] = 0;
        assert_eq!(verify_request(&bad_len, SECRET), Err(MaProblem::Malformed));
    }

    #[test]
    fn replies_carry_the_message_authenticator_first_and_verify() {
        let (bytes, _) = request(true);
        let req = Packet::decode(&bytes, SECRET).unwrap();
        let out = reply(&req, Code::AccessReject, &[(18, b"Access denied".to_vec())]).unwrap();
        let r = read_reply(&out, &bytes, SECRET).unwrap();
        assert_eq!(r.code, Code::AccessReject);
        assert_eq!(r.id, 7);
        assert!(r.message_authenticator_first);
        assert_eq!(r.reply_message.as_deref(), Some("Access denied"));
        assert!(read_reply(&out, &bytes, b"another secret entirely").is_err());
    }
}
