//! The LDAP listener's input path: bytes from the network through the decoder Cairn runs
//! (`ldap3_proto`'s codec at Cairn's message size limit), then every DN and filter the
//! decoded message carries through Cairn's own DN parsing and filter evaluation. Nothing may
//! panic, hang or grow without bound.
#![no_main]

use bytes::BytesMut;
use ldap3_proto::LdapCodec;
use libfuzzer_sys::fuzz_target;
use tokio_util::codec::Decoder;

fuzz_target!(|data: &[u8]| {
    let mut codec = LdapCodec::new(Some(64 * 1024), None);
    let mut buf = BytesMut::from(data);
    for _ in 0..16 {
        match codec.decode(&mut buf) {
            Ok(Some(msg)) => cairn_ldap::fuzzing::exercise(&msg),
            Ok(None) | Err(_) => break,
        }
    }
});
