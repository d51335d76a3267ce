//! What the directory needs from the deployment: links, mail delivery, the secrets key.

use cairn_domain::throttle::Rate;

/// How mail leaves the outbox.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Tls {
    /// Plain SMTP (a relay on localhost).
    None,
    /// STARTTLS, required.
    StartTls,
    /// Implicit TLS from the first byte (port 465).
    Wrapper,
}

#[derive(Clone, PartialEq, Eq)]
pub struct Smtp {
    pub host: String,
    pub port: u16,
    pub user: Option<String>,
    pub password: Option<String>,
    pub tls: Tls,
}

impl std::fmt::Debug for Smtp {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "smtp://{}{}:{} ({:?})",
            self.user.as_deref().map(|u| format!("{u}:***@")).unwrap_or_default(),
            self.host,
            self.port,
            self.tls
        )
    }
}

impl Smtp {
    /// `smtp://[user:pass@]host[:port][?tls=starttls|required|none]`. Without `tls`, port 465
    /// means implicit TLS and any other port STARTTLS.
    pub fn parse(url: &str) -> Result<Smtp, String> {
        let bad = |why: &str| format!("CAIRN_SMTP_URL '{}': {why}", redact(url));
        let rest = url.strip_prefix("smtp://").ok_or_else(|| bad("must start with smtp://"))?;
        let (main, query) = rest.split_once('?').unwrap_or((rest, ""));
        let (auth, hostport) = match main.rsplit_once('@') {
            Some((a, h)) => (Some(a), h),
            None => (None, main),
        };
        let (user, password) = match auth {
            Some(a) => {
                let (u, p) = a.split_once(':').unwrap_or((a, ""));
                (Some(pct(u)), Some(pct(p)))
            }
            None => (None, None),
        };
        let hostport = hostport.trim_end_matches('/');
        let (host, port) = match hostport.rsplit_once(':') {
            Some((h, p)) => (h.to_string(), p.parse::<u16>().map_err(|_| bad("the port must be a number"))?),
            None => (hostport.to_string(), 587),
        };
        if host.is_empty() {
            return Err(bad("a host is required"));
        }
        let mut tls = if port == 465 { Tls::Wrapper } else { Tls::StartTls };
        for kv in query.split('&').filter(|s| !s.is_empty()) {
            match kv.split_once('=') {
                Some(("tls", "none")) => tls = Tls::None,
                Some(("tls", "starttls")) => tls = Tls::StartTls,
                Some(("tls", "required")) => tls = Tls::Wrapper,
                _ => return Err(bad(&format!("unknown option '{kv}' (use tls=starttls|required|none)"))),
            }
        }
        Ok(Smtp { host, port, user, password, tls })
    }
}

fn pct(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' && i + 2 < b.len() {
            if let Ok(v) = u8::from_str_radix(&s[i + 1..i + 3], 16) {
                out.push(v);
                i += 3;
                continue;
            }
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn redact(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(s), Some(at)) if at > s => format!("{}***{}", &url[..s + 3], &url[at..]),
        _ => url.to_string(),
    }
}

#[derive(Clone)]
pub struct Config {
    /// Public URL of the portals, used in mailed links.
    pub base_url: String,
    /// `None`: messages are kept in the outbox with status `logged`.
    pub smtp: Option<Smtp>,
    pub mail_from: String,
    /// Key for secrets at rest (TOTP), kept in the data directory.
    pub secret_key: Option<[u8; 32]>,
    /// Failed sign-ins allowed per client address, over every protocol (§13, SECURITY.md).
    pub sign_in_rate: Rate,
    /// Self-service password-reset requests allowed per client address.
    pub reset_rate: Rate,
    /// Reset mails one account may be sent through self-service requests per hour.
    pub resets_per_account_hour: i64,
    /// Where uploads wait for their import (the data directory); `None`: the system's
    /// temporary directory.
    pub spool_dir: Option<std::path::PathBuf>,
    /// CSV imports and bulk jobs running at once in this process; one more is refused (429).
    pub max_concurrent_imports: usize,
    /// Delivered and logged messages older than this leave the outbox (their events stay);
    /// `None` keeps them forever.
    pub outbox_retention: Option<chrono::Duration>,
    /// How long an OIDC access token lives (`CAIRN_OIDC_ACCESS_TOKEN_SECONDS`): short, since
    /// only introspection and userinfo see its revocation.
    pub oidc_access_ttl: chrono::Duration,
    /// User lists matching up to this many users carry an exact `totalCount` on every request;
    /// larger ones are counted once and then served from memory, refreshed in the background
    /// (see `counts`). Default [`crate::EXACT_COUNT_UP_TO`].
    pub exact_count_up_to: i64,
    /// With PostgreSQL (several processes), how long a running job may record no progress
    /// before it is taken for one a stopped process left (`CAIRN_STALE_JOB_SECONDS`).
    pub stale_job_after: chrono::Duration,
}

impl Config {
    /// The OIDC issuer: the base URL exactly, without a trailing slash.
    pub fn issuer(&self) -> &str {
        self.base_url.trim_end_matches('/')
    }
}

impl Default for Config {
    fn default() -> Self {
        Config {
            base_url: "http://127.0.0.1:8080".into(),
            smtp: None,
            mail_from: "Cairn <noreply@localhost>".into(),
            secret_key: None,
            // A person mistyping gets far more than needed; a guesser gets one try per two
            // seconds per address, before lockout stops it for the account.
            sign_in_rate: Rate { burst: 30, per_minute: 30 },
            reset_rate: Rate { burst: 10, per_minute: 10 },
            resets_per_account_hour: 3,
            spool_dir: None,
            max_concurrent_imports: 2,
            outbox_retention: Some(chrono::Duration::days(30)),
            oidc_access_ttl: chrono::Duration::minutes(5),
            exact_count_up_to: crate::EXACT_COUNT_UP_TO,
            stale_job_after: chrono::Duration::minutes(5),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn smtp_urls() {
        let s = Smtp::parse("smtp://mailer:p%40ss@mail.example.com:2525?tls=none").unwrap();
        assert_eq!((s.host.as_str(), s.port, s.tls.clone()), ("mail.example.com", 2525, Tls::None));
        assert_eq!((s.user.as_deref(), s.password.as_deref()), (Some("mailer"), Some("p@ss")));
        assert_eq!(Smtp::parse("smtp://relay").unwrap().tls, Tls::StartTls);
        assert_eq!(Smtp::parse("smtp://relay:465").unwrap().tls, Tls::Wrapper);
        assert_eq!(Smtp::parse("smtp://relay:25?tls=required").unwrap().tls, Tls::Wrapper);
        assert!(Smtp::parse("http://relay").is_err());
        assert!(Smtp::parse("smtp://relay:x").is_err());
        let e = Smtp::parse("smtp://u:secret@relay?tls=maybe").unwrap_err();
        assert!(e.contains("tls=maybe") && !e.contains("secret"), "{e}");
        assert!(!format!("{:?}", Smtp::parse("smtp://u:secret@relay").unwrap()).contains("secret"));
    }
}
