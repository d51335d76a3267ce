//! RADIUS servers (§11): JumpCloud's `radiusserver`, a resource of the graph (`radius_server`).
//! A server is the set of network devices (the NAS: a Wi-Fi controller, a VPN) that send
//! Access-Requests from `networkSourceIp` (an address or, in Cairn, a CIDR range) signed with
//! the shared secret. Validation of the JSON bodies of `POST` and `PUT /api/radiusservers` is
//! here; sealing the secret and storing are the directory's.

use std::net::IpAddr;
use std::str::FromStr;

use chrono::{DateTime, Utc};
use ipnet::IpNet;
use serde_json::{Map, Value};

use crate::error::FieldError;

/// Shared secrets shorter than this are refused: the secret is all that protects PAP
/// passwords on the wire and the packets' integrity (RFC 2865 §3 asks for at least 16 octets,
/// and a short one falls to an offline search of one captured exchange).
pub const MIN_SECRET_CHARS: usize = 16;
/// RFC 2865 leaves the length open; FreeRADIUS and most NAS accept up to 128 bytes.
pub const MAX_SECRET_BYTES: usize = 128;
const MAX_NAME_CHARS: usize = 256;

/// When the server asks for a TOTP code (JumpCloud's `mfa`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum RadiusMfa {
    /// Never (users whose own setting requires MFA are still asked).
    #[default]
    Disabled,
    /// Of users who have enrolled an authenticator.
    Enabled,
    /// Of every user, except during an MFA exclusion period an admin granted (resetmfa).
    Required,
    /// Of every user, exclusion or not.
    Always,
}

impl RadiusMfa {
    pub const ALL: [RadiusMfa; 4] = [RadiusMfa::Disabled, RadiusMfa::Enabled, RadiusMfa::Required, RadiusMfa::Always];
    pub fn parse(s: &str) -> Option<RadiusMfa> {
        RadiusMfa::ALL.into_iter().find(|m| m.as_str() == s)
    }
    pub fn as_str(self) -> &'static str {
        match self {
            RadiusMfa::Disabled => "DISABLED",
            RadiusMfa::Enabled => "ENABLED",
            RadiusMfa::Required => "REQUIRED",
            RadiusMfa::Always => "ALWAYS",
        }
    }
    /// Whether a code is asked of a user with or without an enrolled authenticator, in or
    /// out of an exclusion period.
    pub fn requires(self, enrolled: bool, excluded: bool) -> bool {
        match self {
            RadiusMfa::Disabled => false,
            RadiusMfa::Enabled => enrolled && !excluded,
            RadiusMfa::Required => !excluded,
            RadiusMfa::Always => true,
        }
    }
}

/// What the server does with a locked user, or one whose password expired (JumpCloud's
/// `userLockoutAction`, `userPasswordExpirationAction`): refuse them, or let them in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum RadiusAction {
    #[default]
    Remove,
    Maintain,
}

impl RadiusAction {
    pub fn parse(s: &str) -> Option<RadiusAction> {
        match s {
            "REMOVE" => Some(RadiusAction::Remove),
            "MAINTAIN" => Some(RadiusAction::Maintain),
            _ => None,
        }
    }
    pub fn as_str(self) -> &'static str {
        match self {
            RadiusAction::Remove => "REMOVE",
            RadiusAction::Maintain => "MAINTAIN",
        }
    }
}

/// The addresses a server's requests come from: one address or a CIDR range.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Source(IpNet);

impl Source {
    /// `192.0.2.7`, `192.0.2.0/24`, `2001:db8::/64`; host bits of a range must be zero so
    /// that what is stored is what is meant.
    pub fn parse(s: &str) -> Option<Source> {
        let s = s.trim();
        if let Ok(ip) = IpAddr::from_str(s) {
            return Some(Source(IpNet::from(canonical(ip))));
        }
        let net = IpNet::from_str(s).ok()?;
        if net.trunc() != net {
            return None;
        }
        Some(Source(match net.network() {
            IpAddr::V6(v6) if v6.to_ipv4_mapped().is_some() && net.prefix_len() >= 96 => {
                IpNet::new(canonical(net.network()), net.prefix_len() - 96).ok()?
            }
            _ => net,
        }))
    }

    pub fn contains(&self, addr: IpAddr) -> bool {
        self.0.contains(&canonical(addr))
    }

    pub fn overlaps(&self, other: &Source) -> bool {
        self.0.contains(&other.0.network()) || other.0.contains(&self.0.network())
    }

    /// How many addresses it names, as a power of two: the most specific source wins a tie
    /// (there is none: overlaps are refused, but a lookup must not depend on that).
    pub fn prefix_len(&self) -> u8 {
        self.0.prefix_len()
    }
}

impl std::fmt::Display for Source {
    /// A single address without its `/32` or `/128`.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.0.prefix_len() == self.0.max_prefix_len() {
            write!(f, "{}", self.0.addr())
        } else {
            write!(f, "{}", self.0)
        }
    }
}

/// An IPv4 address, whether it came as such or mapped into IPv6 (a dual-stack socket).
pub fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    }
}

/// A RADIUS server as stored: the secret sealed with the data-dir key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RadiusServer {
    pub id: String,
    pub name: String,
    pub source: Source,
    pub sealed_secret: String,
    pub mfa: RadiusMfa,
    pub user_lockout_action: RadiusAction,
    pub user_password_expiration_action: RadiusAction,
    /// PAP sign-ins are accepted (JumpCloud's `userPasswordEnabled`; Cairn has no other kind).
    pub user_password_enabled: bool,
    pub created: DateTime<Utc>,
}

/// What a `POST` or `PUT` body sets; absent fields keep their value on `PUT`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RadiusInput {
    pub name: Option<String>,
    pub source: Option<Source>,
    pub shared_secret: Option<String>,
    pub mfa: Option<RadiusMfa>,
    pub user_lockout_action: Option<RadiusAction>,
    pub user_password_expiration_action: Option<RadiusAction>,
    pub user_password_enabled: Option<bool>,
}

/// JumpCloud's fields Cairn has no feature behind: accepted only with the value that asks
/// for nothing, so a client sending its defaults works and one asking for more is told.
const OFF_FIELDS: &[&str] =
    &["deviceCertEnabled", "radsecEnabled", "requireRadsec", "requireTlsAuth", "userCertEnabled"];

/// Reads a `radiusserverpost` (`create`) or `PUT` body (`own_id`: the server's id, which an
/// `_id` in the body must repeat). Every problem is named; nothing else is read.
pub fn parse_input(body: &Value, own_id: Option<&str>) -> Result<RadiusInput, Vec<FieldError>> {
    let Some(obj) = body.as_object() else {
        return Err(vec![FieldError::new("body", "must be a JSON object")]);
    };
    let mut input = RadiusInput::default();
    let mut errors = Vec::new();
    for (k, v) in obj {
        read_field(k, v, own_id, &mut input, &mut errors);
    }
    if own_id.is_none() {
        for (field, missing) in [
            ("name", input.name.is_none()),
            ("networkSourceIp", input.source.is_none()),
            ("sharedSecret", input.shared_secret.is_none()),
        ] {
            if missing && !errors.iter().any(|e: &FieldError| e.field == field) {
                errors.push(FieldError::new(field, "is required"));
            }
        }
    }
    if errors.is_empty() {
        Ok(input)
    } else {
        Err(errors)
    }
}

fn read_field(k: &str, v: &Value, own_id: Option<&str>, input: &mut RadiusInput, errors: &mut Vec<FieldError>) {
    let mut err = |m: &str| errors.push(FieldError::new(k, m));
    match k {
        "_id" | "id" => match (own_id, v.as_str()) {
            (Some(id), Some(s)) if s == id => {}
            (Some(_), _) => err("is the server's own and cannot change"),
            (None, _) => err("is assigned by Cairn"),
        },
        // The organization is the one this server belongs to; repeating it changes nothing.
        "organization" if v.is_string() => {}
        "organization" => err("must be a string"),
        "name" => match v.as_str().map(str::trim) {
            Some(n) if !n.is_empty() && n.chars().count() <= MAX_NAME_CHARS && !n.contains('\0') => {
                input.name = Some(n.to_string())
            }
            _ => err("must be a non-empty string of at most 256 characters"),
        },
        "networkSourceIp" => match v.as_str().and_then(Source::parse) {
            Some(s) => input.source = Some(s),
            None => err("must be an IP address (192.0.2.7) or a CIDR range without host bits (192.0.2.0/24)"),
        },
        "sharedSecret" => match v.as_str() {
            Some(s) if s.contains('\0') => err("must not contain a NUL character"),
            Some(s) if s.chars().count() < MIN_SECRET_CHARS => err("must be at least 16 characters"),
            Some(s) if s.len() > MAX_SECRET_BYTES => err("must be at most 128 bytes"),
            Some(s) => input.shared_secret = Some(s.to_string()),
            None => err("must be a string"),
        },
        "mfa" => match v.as_str().and_then(RadiusMfa::parse) {
            Some(m) => input.mfa = Some(m),
            None => err("must be one of DISABLED, ENABLED, REQUIRED, ALWAYS"),
        },
        "userLockoutAction" | "userPasswordExpirationAction" => match v.as_str().and_then(RadiusAction::parse) {
            Some(a) if k == "userLockoutAction" => input.user_lockout_action = Some(a),
            Some(a) => input.user_password_expiration_action = Some(a),
            None => err("must be REMOVE or MAINTAIN"),
        },
        "userPasswordEnabled" => match v.as_bool() {
            Some(b) => input.user_password_enabled = Some(b),
            None => err("must be true or false"),
        },
        "authIdp" => match v.as_str() {
            Some("JUMPCLOUD") => {}
            _ => err("must be JUMPCLOUD: Cairn verifies passwords itself"),
        },
        "caCert" => match v.as_str() {
            Some("") => {}
            _ => err("must be empty: Cairn has no certificate authentication"),
        },
        f if OFF_FIELDS.contains(&f) => match v.as_bool() {
            Some(false) => {}
            _ => err("must be false: Cairn has no RadSec or certificate authentication"),
        },
        _ => err("is not a field of a RADIUS server (name, networkSourceIp, sharedSecret, mfa, userLockoutAction, \
             userPasswordExpirationAction, userPasswordEnabled)"),
    }
}

/// JumpCloud's `radiusserverput` JSON (the answer of PUT and DELETE, and every list entry):
/// never the secret. `radiusserver` (POST's answer) adds `sharedSecret` to it.
pub fn server_json(s: &RadiusServer, organization: &str) -> Value {
    let mut m = Map::new();
    m.insert("_id".into(), s.id.clone().into());
    m.insert("id".into(), s.id.clone().into());
    m.insert("organization".into(), organization.into());
    m.insert("name".into(), s.name.clone().into());
    m.insert("networkSourceIp".into(), s.source.to_string().into());
    m.insert("mfa".into(), s.mfa.as_str().into());
    m.insert("authIdp".into(), "JUMPCLOUD".into());
    m.insert("userLockoutAction".into(), s.user_lockout_action.as_str().into());
    m.insert("userPasswordExpirationAction".into(), s.user_password_expiration_action.as_str().into());
    m.insert("userPasswordEnabled".into(), s.user_password_enabled.into());
    for f in OFF_FIELDS {
        m.insert((*f).into(), false.into());
    }
    Value::Object(m)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn sources_parse_ranges_and_single_addresses() {
        assert_eq!(Source::parse("192.0.2.7").unwrap().to_string(), "192.0.2.7");
        assert_eq!(Source::parse(" 192.0.2.0/24 ").unwrap().to_string(), "192.0.2.0/24");
        assert_eq!(Source::parse("::ffff:192.0.2.7").unwrap().to_string(), "192.0.2.7");
        assert_eq!(Source::parse("2001:db8::/64").unwrap().to_string(), "2001:db8::/64");
        assert!(Source::parse("192.0.2.1/24").is_none(), "host bits set");
        assert!(Source::parse("192.0.2.0/33").is_none());
        assert!(Source::parse("example.com").is_none());
        assert!(Source::parse("").is_none());
        let net = Source::parse("10.1.0.0/16").unwrap();
        assert!(net.contains("10.1.200.3".parse().unwrap()));
        assert!(net.contains("::ffff:10.1.0.1".parse().unwrap()), "a dual-stack socket's mapped address");
        assert!(!net.contains("10.2.0.1".parse().unwrap()));
    }

    #[test]
    fn overlapping_sources_are_seen_both_ways() {
        let p = |s| Source::parse(s).unwrap();
        assert!(p("10.0.0.0/8").overlaps(&p("10.1.2.3")));
        assert!(p("10.1.2.3").overlaps(&p("10.0.0.0/8")));
        assert!(p("10.1.2.3").overlaps(&p("10.1.2.3")));
        assert!(!p("10.0.0.0/24").overlaps(&p("10.0.1.0/24")));
        assert!(!p("10.0.0.1").overlaps(&p("2001:db8::1")));
        assert!(p("0.0.0.0/0").overlaps(&p("192.0.2.1")));
    }

    #[test]
    fn mfa_modes_ask_whom_they_say() {
        use RadiusMfa::*;
        // (enrolled, excluded) → asked
        let table = [
            (Disabled, [false, false, false, false]),
            (Enabled, [false, false, true, false]),
            (Required, [true, false, true, false]),
            (Always, [true, true, true, true]),
        ];
        for (m, want) in table {
            let got =
                [m.requires(false, false), m.requires(false, true), m.requires(true, false), m.requires(true, true)];
            assert_eq!(got, want, "{m:?}");
        }
    }

    #[test]
    fn bodies_are_read_field_by_field() {
        let ok = parse_input(
            &json!({"name": "Wi-Fi", "networkSourceIp": "10.0.0.0/24", "sharedSecret": "0123456789abcdefXYZ",
                    "mfa": "REQUIRED", "userLockoutAction": "MAINTAIN", "authIdp": "JUMPCLOUD",
                    "radsecEnabled": false}),
            None,
        )
        .unwrap();
        assert_eq!(ok.mfa, Some(RadiusMfa::Required));
        assert_eq!(ok.user_lockout_action, Some(RadiusAction::Maintain));
        let errs = parse_input(&json!({"name": "", "sharedSecret": "short", "mfa": "sometimes", "colour": 1}), None)
            .unwrap_err();
        let fields: Vec<&str> = errs.iter().map(|e| e.field.as_str()).collect();
        assert_eq!(fields, ["name", "sharedSecret", "mfa", "colour", "networkSourceIp"]);
        let errs = parse_input(&json!({"requireRadsec": true, "_id": "x"}), Some("y")).unwrap_err();
        assert_eq!(errs.len(), 2);
        assert!(parse_input(&json!({"_id": "y", "name": "n"}), Some("y")).is_ok());
        assert!(parse_input(&json!([1]), None).is_err());
    }
}
