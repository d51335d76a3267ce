//! Configuration (§1.2): `--config FILE` (default `./cairn.toml` when present), then `CAIRN_*`
//! environment variables, which win.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use serde::Deserialize;

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileConfig {
    data_dir: Option<String>,
    database_url: Option<String>,
    http_addr: Option<String>,
    base_url: Option<String>,
    ldap_addr: Option<String>,
    ldaps_addr: Option<String>,
    ldap_base_dn: Option<String>,
    ldap_tls_cert: Option<String>,
    ldap_tls_key: Option<String>,
    radius_addr: Option<String>,
    radius_max_pending: Option<u64>,
    smtp_url: Option<String>,
    mail_from: Option<String>,
    bootstrap_api_key: Option<String>,
    log: Option<String>,
    log_format: Option<String>,
    http_header_timeout: Option<u64>,
    http_idle_timeout: Option<u64>,
    http_max_connections: Option<u64>,
    max_concurrent_imports: Option<u64>,
    outbox_retention_days: Option<u64>,
    oidc_access_token_seconds: Option<u64>,
    stale_job_seconds: Option<u64>,
}

#[derive(Debug, Clone)]
pub struct Config {
    pub data_dir: PathBuf,
    pub database_url: String,
    pub http_addr: String,
    pub base_url: String,
    pub ldap_addr: Option<String>,
    pub ldaps_addr: Option<String>,
    pub ldap_base_dn: String,
    pub ldap_tls_cert: Option<String>,
    pub ldap_tls_key: Option<String>,
    pub radius_addr: Option<String>,
    /// Access-Requests verified at once; past it new ones are dropped (`CAIRN_RADIUS_MAX_PENDING`).
    pub radius_max_pending: usize,
    pub smtp_url: Option<String>,
    pub mail_from: String,
    pub bootstrap_api_key: Option<String>,
    pub log: String,
    pub log_format: String,
    /// Seconds a client has to send a request head (`CAIRN_HTTP_HEADER_TIMEOUT`).
    pub http_header_timeout: std::time::Duration,
    /// Seconds a connection may move no byte before it ends (`CAIRN_HTTP_IDLE_TIMEOUT`).
    pub http_idle_timeout: std::time::Duration,
    /// Open HTTP connections at most; past it new ones wait (`CAIRN_HTTP_MAX_CONNECTIONS`).
    pub http_max_connections: usize,
    /// CSV imports and bulk jobs running at once; past it a 429 (`CAIRN_MAX_CONCURRENT_IMPORTS`).
    pub max_concurrent_imports: usize,
    /// Days a delivered or logged message stays in the outbox; 0 keeps them forever
    /// (`CAIRN_OUTBOX_RETENTION_DAYS`).
    pub outbox_retention_days: u64,
    /// Seconds an OIDC access token lives (`CAIRN_OIDC_ACCESS_TOKEN_SECONDS`, default 300).
    pub oidc_access_token_seconds: u64,
    /// With PostgreSQL, seconds a running job may record no progress before it counts as
    /// left by a stopped process (`CAIRN_STALE_JOB_SECONDS`, default 300).
    pub stale_job_seconds: u64,
}

fn env(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.is_empty())
}

/// A whole number from the environment (which wins) or the file, at least `min`.
fn number(name: &str, file: Option<u64>, default: u64, min: u64) -> Result<u64> {
    let n = match env(name) {
        Some(v) => v.trim().parse::<u64>().map_err(|_| anyhow::anyhow!("{name} must be a whole number, not '{v}'"))?,
        None => file.unwrap_or(default),
    };
    if n < min {
        bail!("{name} must be at least {min}, not {n}");
    }
    Ok(n)
}

fn off(v: String) -> Option<String> {
    (v != "off").then_some(v)
}

impl Config {
    pub fn load(path: Option<&Path>) -> Result<Config> {
        let file = match path {
            Some(p) => Some(p.to_path_buf()),
            None => Some(PathBuf::from("cairn.toml")).filter(|p| p.exists()),
        };
        let fc: FileConfig = match &file {
            Some(p) => {
                let text = std::fs::read_to_string(p)
                    .with_context(|| format!("cannot read configuration file {}", p.display()))?;
                toml::from_str(&text)
                    .map_err(|e| anyhow::anyhow!("configuration file {}: {}", p.display(), e.message()))?
            }
            None => FileConfig::default(),
        };
        let data_dir = PathBuf::from(env("CAIRN_DATA_DIR").or(fc.data_dir).unwrap_or_else(|| "./cairn-data".into()));
        let database_url = env("CAIRN_DATABASE_URL")
            .or(fc.database_url)
            .unwrap_or_else(|| format!("sqlite://{}/cairn.db", data_dir.display()));
        let http_addr = env("CAIRN_HTTP_ADDR").or(fc.http_addr).unwrap_or_else(|| "127.0.0.1:8080".into());
        let base_url = env("CAIRN_BASE_URL")
            .or(fc.base_url)
            .unwrap_or_else(|| format!("http://{http_addr}"))
            .trim_end_matches('/')
            .to_string();
        let log_format = env("CAIRN_LOG_FORMAT").or(fc.log_format).unwrap_or_else(|| "text".into());
        if !matches!(log_format.as_str(), "text" | "json") {
            bail!("CAIRN_LOG_FORMAT must be text or json, not '{log_format}'");
        }
        if !(database_url.starts_with("sqlite:")
            || database_url.starts_with("postgres:")
            || database_url.starts_with("postgresql:"))
        {
            bail!("CAIRN_DATABASE_URL must start with sqlite:// or postgres://, not '{database_url}'");
        }
        Ok(Config {
            data_dir,
            database_url,
            http_addr,
            base_url,
            ldap_addr: off(env("CAIRN_LDAP_ADDR").or(fc.ldap_addr).unwrap_or_else(|| "127.0.0.1:3389".into())),
            ldaps_addr: env("CAIRN_LDAPS_ADDR").or(fc.ldaps_addr).and_then(off),
            ldap_base_dn: env("CAIRN_LDAP_BASE_DN").or(fc.ldap_base_dn).unwrap_or_else(|| "dc=cairn,dc=local".into()),
            ldap_tls_cert: env("CAIRN_LDAP_TLS_CERT").or(fc.ldap_tls_cert),
            ldap_tls_key: env("CAIRN_LDAP_TLS_KEY").or(fc.ldap_tls_key),
            radius_addr: off(env("CAIRN_RADIUS_ADDR").or(fc.radius_addr).unwrap_or_else(|| "127.0.0.1:1812".into())),
            radius_max_pending: number("CAIRN_RADIUS_MAX_PENDING", fc.radius_max_pending, 128, 1)? as usize,
            smtp_url: env("CAIRN_SMTP_URL").or(fc.smtp_url),
            mail_from: env("CAIRN_MAIL_FROM").or(fc.mail_from).unwrap_or_else(|| "Cairn <noreply@localhost>".into()),
            bootstrap_api_key: env("CAIRN_BOOTSTRAP_API_KEY").or(fc.bootstrap_api_key),
            log: env("CAIRN_LOG").or(fc.log).unwrap_or_else(|| "info".into()),
            log_format,
            http_header_timeout: std::time::Duration::from_secs(number(
                "CAIRN_HTTP_HEADER_TIMEOUT",
                fc.http_header_timeout,
                10,
                1,
            )?),
            http_idle_timeout: std::time::Duration::from_secs(number(
                "CAIRN_HTTP_IDLE_TIMEOUT",
                fc.http_idle_timeout,
                60,
                1,
            )?),
            http_max_connections: number("CAIRN_HTTP_MAX_CONNECTIONS", fc.http_max_connections, 1024, 1)? as usize,
            max_concurrent_imports: number("CAIRN_MAX_CONCURRENT_IMPORTS", fc.max_concurrent_imports, 2, 1)? as usize,
            outbox_retention_days: number("CAIRN_OUTBOX_RETENTION_DAYS", fc.outbox_retention_days, 30, 0)?,
            oidc_access_token_seconds: number(
                "CAIRN_OIDC_ACCESS_TOKEN_SECONDS",
                fc.oidc_access_token_seconds,
                300,
                10,
            )?,
            stale_job_seconds: number("CAIRN_STALE_JOB_SECONDS", fc.stale_job_seconds, 300, 2)?,
        })
    }
}
