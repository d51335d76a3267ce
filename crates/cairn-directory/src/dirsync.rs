//! Directory integration (§12): connections to an upstream LDAP / Active Directory, the sync
//! job that imports and follows its users and groups, and the upstream bind that checks a
//! delegated user's password (called by `authenticate` only).
//!
//! A sync reads every user and group of the connection's filters with paged searches
//! (RFC 2696), then applies them: new users in one transaction per chunk with the CSV
//! import's bulk insert (their events and links in it too; a user it leaves out goes the
//! one-by-one way), every other user in its own transaction through the same use cases as
//! every other front end (`insert_new_user`, `update_loaded_in`), with events of source
//! `adi`. Users are matched by the upstream's stable id (objectGUID / entryUUID) recorded in
//! `directory_links`, never by name. A user disabled upstream, out of the filter or deleted is
//! suspended, never deleted; the link remembers it, so the user is reactivated on return. A
//! dry run does all of it in transactions that are rolled back. An interrupted sync leaves
//! what it committed; the next run converges.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use cairn_domain::dirsync::{self, Authority, Connection, Entry, UpstreamGroup, UpstreamUser};
use cairn_domain::id::is_object_id;
use cairn_domain::lifecycle::MailChoice;
use cairn_domain::user::{parse_user_input, parse_user_object, UserInput};
use cairn_domain::{Actor, CreationSource, Secret, State};
use cairn_store::{JobResult, JobUpdate, Link};
use ldap3::adapters::{Adapter, EntriesOnly, PagedResults};
use ldap3::{LdapConnAsync, LdapConnSettings, Scope};
use serde_json::{json, Map, Value};

use crate::error::{Error, Result};
use crate::{Ctx, Directory};

/// The most connections an organization may have.
pub const MAX_CONNECTIONS: i64 = 100;
/// How long connecting (TCP, TLS, StartTLS) to an upstream may take.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// How long one upstream operation (a bind, one page of a search) may take.
pub const OP_TIMEOUT: Duration = Duration::from_secs(10);
/// Entries per page of a sync's searches.
const PAGE: i32 = 1000;
/// Consecutive upstream failures after which delegated binds stop trying for a while.
const BREAKER_FAILURES: u32 = 3;
const BREAKER_OPEN: Duration = Duration::from_secs(30);
/// Results written per batch, and progress recorded as often.
const RESULT_BATCH: usize = 500;
/// New users of several pages share a transaction for up to this long: each commit rewrites
/// every index page it touched, and usernames and e-mails arrive in no order, so nearly every
/// page touches every page of their indexes. The bound keeps other writers' waits short.
const COMMIT_AFTER: Duration = Duration::from_millis(1_000);
/// How often a run with nothing else to write records its progress.
const PROGRESS_EVERY: Duration = Duration::from_millis(500);
/// A first import into a directory of fewer users than this builds the user search indexes
/// once at its end (see `run_directory_sync`).
const REINDEX_MAX_USERS: i64 = 10_000;

/// What every user of `c` is given whatever its entry says (its restricted fields, its
/// password authority), hashed: part of each user's [`digest`].
fn salt(c: &Connection) -> [u8; 32] {
    use sha2::Digest;
    let delegated = c.password_authority == Authority::Delegated;
    let body =
        json!({ "restrictedFields": dirsync::restricted_fields(c, None), "delegated": delegated.then_some(&c.id) });
    sha2::Sha256::digest(body.to_string().as_bytes()).into()
}

/// A digest of everything the upstream asks of a user, so an unchanged entry is seen without
/// reading the user back; `salt` carries the connection's part (mapping, authority).
fn digest(salt: &[u8; 32], u: &UpstreamUser) -> String {
    use sha2::Digest;
    let mut h = sha2::Sha256::new();
    h.update(salt);
    let mut w = std::io::BufWriter::with_capacity(512, HashWriter(&mut h));
    serde_json::to_writer(&mut w, &(&u.username, &u.dn, u.disabled, &u.fields)).expect("serializes to a hash");
    drop(w);
    hex::encode(&h.finalize()[..16])
}

/// A DN as an error names it: cut short past 200 bytes (an entry refused for its DN's length
/// would otherwise put all of it in the job's results).
fn shown_dn(dn: &str) -> std::borrow::Cow<'_, str> {
    const MAX: usize = 200;
    if dn.len() <= MAX {
        return dn.into();
    }
    let mut end = MAX;
    while !dn.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &dn[..end]).into()
}

/// An upstream id as 16 bytes of its SHA-256: a set of 100,000 of these takes a sixth of the
/// memory of the ids themselves, and two ids colliding is not a real risk.
fn id_key(id: &str) -> [u8; 16] {
    use sha2::Digest;
    let h = sha2::Sha256::digest(id.as_bytes());
    let mut k = [0; 16];
    k.copy_from_slice(&h[..16]);
    k
}

/// Feeds what is written into a hash, without building the text.
struct HashWriter<'a>(&'a mut sha2::Sha256);

impl std::io::Write for HashWriter<'_> {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        sha2::Digest::update(self.0, b);
        Ok(b.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// The link of a user a sync creates.
fn new_link(u: &UpstreamUser, user: &cairn_domain::User, digest: &str) -> Link {
    Link {
        upstream_id: u.upstream_id.clone(),
        local_id: user.id.clone(),
        dn: u.dn.clone(),
        suspended: u.disabled,
        digest: Some(digest.to_string()),
        user_updated: Some(user.updated),
    }
}

/// The mail a user created by a sync of `c` gets: a password held upstream needs no
/// activation link from Cairn.
fn creation_mail(c: &Connection) -> MailChoice {
    match c.password_authority {
        Authority::None => MailChoice::Default,
        Authority::External | Authority::Delegated => MailChoice::None,
    }
}

/// The circuit breakers of delegated binds, per connection: after `BREAKER_FAILURES`
/// consecutive failures to reach the upstream, binds are refused at once for `BREAKER_OPEN`,
/// then one attempt is let through (half-open).
#[derive(Default)]
pub(crate) struct Breakers(Mutex<HashMap<String, (u32, Option<Instant>)>>);

impl Breakers {
    fn open(&self, id: &str) -> bool {
        let mut m = self.0.lock().expect("breakers");
        match m.get_mut(id) {
            Some((_, Some(until))) if Instant::now() < *until => true,
            Some((_, until @ Some(_))) => {
                // Half-open: one attempt goes through.
                *until = None;
                false
            }
            _ => false,
        }
    }
    fn record(&self, id: &str, reachable: bool) {
        let mut m = self.0.lock().expect("breakers");
        if reachable {
            m.remove(id);
            return;
        }
        let e = m.entry(id.to_string()).or_insert((0, None));
        e.0 += 1;
        if e.0 >= BREAKER_FAILURES {
            e.1 = Some(Instant::now() + BREAKER_OPEN);
        }
    }
}

/// What a delegated bind found.
pub(crate) enum Upstream {
    /// The upstream answered: the password is right or wrong.
    Answered(bool),
    /// The upstream could not be asked (down, slow, TLS, breaker open): why.
    Unavailable(String),
}

fn no_such(id: &str) -> Error {
    Error::NotFound(format!("no directory connection with id '{id}'"))
}

fn upstream_error(e: impl std::fmt::Display) -> String {
    crate::auth::clip(&e.to_string(), 300)
}

/// The TLS settings of a connection: its CA certificates, or its pinned fingerprint.
fn tls_config(c: &Connection) -> std::result::Result<Option<Arc<rustls::ClientConfig>>, String> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?;
    if let Some(fp) = &c.fingerprint {
        let v = Pinned { sha256: fp.clone(), provider };
        return Ok(Some(Arc::new(
            builder.dangerous().with_custom_certificate_verifier(Arc::new(v)).with_no_client_auth(),
        )));
    }
    if let Some(pem) = &c.ca_cert {
        let mut roots = rustls::RootCertStore::empty();
        for cert in rustls_pemfile::certs(&mut pem.as_bytes()) {
            let cert = cert.map_err(|e| format!("caCert is not readable PEM: {e}"))?;
            roots.add(cert).map_err(|e| format!("caCert holds a certificate rustls refuses: {e}"))?;
        }
        if roots.is_empty() {
            return Err("caCert holds no certificate".into());
        }
        return Ok(Some(Arc::new(builder.with_root_certificates(roots).with_no_client_auth())));
    }
    Ok(None)
}

/// Accepts exactly the certificate whose SHA-256 was pinned (signatures still verified).
#[derive(Debug)]
struct Pinned {
    sha256: String,
    provider: Arc<rustls::crypto::CryptoProvider>,
}

impl rustls::client::danger::ServerCertVerifier for Pinned {
    fn verify_server_cert(
        &self,
        end_entity: &rustls::pki_types::CertificateDer<'_>,
        _intermediates: &[rustls::pki_types::CertificateDer<'_>],
        _name: &rustls::pki_types::ServerName<'_>,
        _ocsp: &[u8],
        _now: rustls::pki_types::UnixTime,
    ) -> std::result::Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        use sha2::Digest;
        use subtle::ConstantTimeEq;
        let got = hex::encode(sha2::Sha256::digest(end_entity.as_ref()));
        if bool::from(got.as_bytes().ct_eq(self.sha256.as_bytes())) {
            Ok(rustls::client::danger::ServerCertVerified::assertion())
        } else {
            // A certificate error (not `General`): the upstream gets a bad-certificate alert
            // rather than an internal error, and `tls_failure` can tell the user both values.
            let why = format!(
                "the server's certificate has the SHA-256 fingerprint {got}, not the pinned fingerprint {}",
                self.sha256
            );
            Err(rustls::CertificateError::Other(rustls::OtherError(Arc::new(PinMismatch(why)))).into())
        }
    }
    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &rustls::pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> std::result::Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.provider.signature_verification_algorithms)
    }
    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &rustls::pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> std::result::Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.provider.signature_verification_algorithms)
    }
    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.provider.signature_verification_algorithms.supported_schemes()
    }
}

#[derive(Debug)]
struct PinMismatch(String);

impl std::fmt::Display for PinMismatch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for PinMismatch {}

/// What a failed TLS handshake means to whoever set up the connection, or `None` when the
/// failure was not TLS. rustls alone says `invalid peer certificate: UnknownIssuer` wrapped
/// in an I/O error, which names neither the certificate nor the setting to change.
fn tls_failure(e: &ldap3::LdapError, c: &Connection) -> Option<String> {
    let err = match e {
        ldap3::LdapError::Rustls { source } => source,
        ldap3::LdapError::Io { source } => source.get_ref()?.downcast_ref::<rustls::Error>()?,
        _ => return None,
    };
    let rustls::Error::InvalidCertificate(cert) = err else {
        return Some(format!("the TLS handshake failed: {err}"));
    };
    Some(match cert {
        rustls::CertificateError::Other(o) => o.0.to_string(),
        rustls::CertificateError::UnknownIssuer if c.ca_cert.is_some() => {
            "the server's certificate is not trusted: it is not issued by the CA in caCert".into()
        }
        rustls::CertificateError::UnknownIssuer => "the server's certificate is not trusted: no CA of this \
             system issued it (set caCert to its CA, or pin its fingerprint)"
            .into(),
        other => format!("the server's certificate is not trusted: {other}"),
    })
}

/// Connects (TCP, TLS or StartTLS) within `CONNECT_TIMEOUT`.
async fn connect(c: &Connection) -> std::result::Result<ldap3::Ldap, String> {
    let mut settings = LdapConnSettings::new()
        .set_conn_timeout(CONNECT_TIMEOUT)
        .set_starttls(c.starttls && c.url.starts_with("ldap://"));
    if let Some(cfg) = tls_config(c)? {
        settings = settings.set_config(cfg);
    }
    let url = c.url.clone();
    let (conn, ldap) = tokio::time::timeout(CONNECT_TIMEOUT, LdapConnAsync::with_settings(settings, &url))
        .await
        .map_err(|_| format!("connecting to {url} timed out after {}s", CONNECT_TIMEOUT.as_secs()))?
        .map_err(|e| match tls_failure(&e, c) {
            Some(why) => format!("cannot connect to {url}: {why}"),
            None => format!("cannot connect to {url}: {}", upstream_error(e)),
        })?;
    tokio::spawn(async move {
        if let Err(e) = conn.drive().await {
            tracing::debug!(error = %e, "upstream LDAP connection ended");
        }
    });
    Ok(ldap)
}

async fn timed<T, E: std::fmt::Display>(
    what: &str,
    f: impl std::future::Future<Output = std::result::Result<T, E>>,
) -> std::result::Result<T, String> {
    tokio::time::timeout(OP_TIMEOUT, f)
        .await
        .map_err(|_| format!("{what} timed out after {}s", OP_TIMEOUT.as_secs()))?
        .map_err(|e| format!("{what} failed: {}", upstream_error(e)))
}

/// Binds as the connection's service account (or anonymously when it has no bind DN).
async fn service_bind(c: &Connection, password: Option<&Secret>) -> std::result::Result<ldap3::Ldap, String> {
    let mut ldap = connect(c).await?;
    if !c.bind_dn.is_empty() {
        let pw = password.map(Secret::expose).unwrap_or("");
        if pw.is_empty() {
            return Err("the connection has a bindDn but no bindPassword".into());
        }
        let r = timed("the service bind", ldap.simple_bind(&c.bind_dn, pw)).await?;
        if r.rc != 0 {
            return Err(format!("the service bind as {} was refused: {} ({})", c.bind_dn, r.text, r.rc));
        }
    }
    Ok(ldap)
}

/// Every entry under `base` matching `filter`, page by page, handed to `each` as it arrives
/// (the raw entries are not all held at once); what `each` answers is sent to `tx`. False
/// when `tx` stopped listening.
async fn search_all<T>(
    ldap: &mut ldap3::Ldap,
    base: &str,
    filter: &str,
    attrs: Vec<String>,
    tx: &tokio::sync::mpsc::Sender<T>,
    mut each: impl FnMut(ldap3::ResultEntry) -> std::result::Result<Option<T>, String>,
) -> std::result::Result<bool, String> {
    let adapters: Vec<Box<dyn Adapter<_, _>>> = vec![Box::new(EntriesOnly::new()), Box::new(PagedResults::new(PAGE))];
    let mut stream =
        timed("the search", ldap.streaming_search_with(adapters, base, Scope::Subtree, filter, attrs)).await?;
    while let Some(re) = timed("reading the search", stream.next()).await? {
        if let Some(msg) = each(re)? {
            if tx.send(msg).await.is_err() {
                // The connection is dropped with the reader, which ends the search upstream.
                return Ok(false);
            }
        }
    }
    let r = tokio::time::timeout(OP_TIMEOUT, stream.finish()).await.map_err(|_| "the search timed out".to_string())?;
    if r.rc != 0 {
        return Err(format!("the search of {base} failed: {} ({})", r.text, r.rc));
    }
    Ok(true)
}

fn malformed(base: &str) -> String {
    format!("the search of {base} returned a malformed entry")
}

/// A search result entry as an [`Entry`], read straight from its BER structure: the values
/// stay bytes (nothing to validate or copy until mapped), and a malformed entry is `None`
/// (ldap3's `SearchEntry::construct` panics on one).
fn entry_of(re: ldap3::ResultEntry) -> Option<Entry> {
    let mut parts = re.0.match_id(4)?.expect_constructed()?.into_iter();
    let dn = String::from_utf8(parts.next()?.expect_primitive()?).ok()?;
    let attrs = parts.next()?.expect_constructed()?;
    let mut e = Entry { dn, attrs: Vec::with_capacity(attrs.len()) };
    for a in attrs {
        let mut a = a.expect_constructed()?.into_iter();
        let name = String::from_utf8(a.next()?.expect_primitive()?).ok()?;
        let values =
            a.next()?.expect_constructed()?.into_iter().map(|v| v.expect_primitive()).collect::<Option<_>>()?;
        e.attrs.push((name, values));
    }
    Some(e)
}

/// An upstream user entry, mapped, or its DN and why it could not be.
type Mapped = std::result::Result<UpstreamUser, (String, String)>;

/// What the upstream reader hands a sync, in this order.
enum Read {
    /// A page of user entries.
    Users(Vec<Mapped>),
    /// Every group (when the connection has a group base), and the group entries that could
    /// not be read.
    Groups(Vec<UpstreamGroup>, Vec<(String, String)>),
    /// Everything was read.
    Done,
    /// The upstream failed: why.
    Failed(String),
}

/// What the reader hands the mapper: user pages as they came off the wire.
enum Raw {
    Users(Vec<ldap3::ResultEntry>),
    Then(Read),
}

/// Reads the connection's users a page at a time, then its groups, into `tx`; stops when the
/// sync stops listening. User pages are mapped by a task of their own: the next page is only
/// asked of the upstream once this one has been read to its end, so a page mapped here would
/// keep the upstream waiting for it (a quarter of a 100,000-user re-sync's read went idle
/// that way).
async fn read_upstream(c: Connection, pw: Option<Secret>, tx: tokio::sync::mpsc::Sender<Read>) {
    let (raw_tx, mut raw_rx) = tokio::sync::mpsc::channel::<Raw>(2);
    let mapping = c.mapping();
    let (base, users_mapping) = (c.user_base.clone(), mapping.clone());
    let mapper = AbortOnDrop(tokio::spawn(async move {
        while let Some(raw) = raw_rx.recv().await {
            let msg = match raw {
                Raw::Users(page) => {
                    let mut out = Vec::with_capacity(page.len());
                    for re in page {
                        let Some(e) = entry_of(re) else {
                            let _ = tx.send(Read::Failed(malformed(&base))).await;
                            return;
                        };
                        out.push(dirsync::map_user(&e, &users_mapping).map_err(|m| (e.dn, m)));
                    }
                    Read::Users(out)
                }
                Raw::Then(r) => r,
            };
            if tx.send(msg).await.is_err() {
                return;
            }
        }
    }));
    let r: std::result::Result<bool, String> = async {
        let mut ldap = service_bind(&c, pw.as_ref()).await?;
        let mut attrs: Vec<String> = mapping.values().filter(|a| !a.is_empty()).cloned().collect();
        attrs.sort();
        attrs.dedup();
        let mut page: Vec<ldap3::ResultEntry> = Vec::with_capacity(PAGE as usize);
        let open = search_all(&mut ldap, &c.user_base, &c.user_filter, attrs.clone(), &raw_tx, |re| {
            page.push(re);
            Ok((page.len() >= PAGE as usize).then(|| Raw::Users(std::mem::take(&mut page))))
        })
        .await?;
        if !open || (!page.is_empty() && raw_tx.send(Raw::Users(page)).await.is_err()) {
            return Ok(false);
        }
        if let Some(base) = &c.group_base {
            let (mut gs, mut skipped) = (Vec::new(), Vec::new());
            search_all(&mut ldap, base, &c.group_filter, attrs, &raw_tx, |re| {
                let e = entry_of(re).ok_or_else(|| malformed(base))?;
                match dirsync::map_group(&e, &mapping) {
                    Ok(g) => gs.push(g),
                    Err(m) => skipped.push((e.dn, m)),
                }
                Ok(None)
            })
            .await?;
            if raw_tx.send(Raw::Then(Read::Groups(gs, skipped))).await.is_err() {
                return Ok(false);
            }
        }
        let _ = ldap.unbind().await;
        Ok(true)
    }
    .await;
    let last = match r {
        Ok(true) => Read::Done,
        Ok(false) => return,
        Err(m) => Read::Failed(m),
    };
    if raw_tx.send(Raw::Then(last)).await.is_ok() {
        // The mapper hands on what it holds, then this, and ends.
        drop(raw_tx);
        let _ = mapper.wait().await;
    }
}

/// Stops a task when its owner is done with it, however the owner ends.
struct AbortOnDrop<T>(tokio::task::JoinHandle<T>);

impl<T> Drop for AbortOnDrop<T> {
    fn drop(&mut self) {
        self.0.abort();
    }
}

impl<T> AbortOnDrop<T> {
    /// Until the task ends by itself.
    async fn wait(mut self) -> std::result::Result<T, tokio::task::JoinError> {
        (&mut self.0).await
    }
}

/// The state of one sync run as its pages are applied.
struct Run {
    connection: String,
    job: String,
    dry_run: bool,
    ctx: Ctx,
    /// Links not met yet in this run, by upstream id, with whether the user is untouched
    /// since the link was written (`None`: the user is gone): what is left at the end is no
    /// longer upstream.
    links: HashMap<String, (Link, Option<bool>)>,
    /// Upstream DN (normalized) → local user id.
    by_dn: HashMap<String, String>,
    counts: SyncCounts,
    /// Results not written yet.
    results: Vec<JobResult>,
    /// Links to rewrite with what they learnt (digest, the user's `updated`).
    refresh: Vec<Link>,
    seq: i64,
    /// Upstream ids met in this run ([`id_key`]).
    seen: HashSet<[u8; 16]>,
    /// Local user id → the groups (normalized DNs) its entry lists in memberOf.
    member_of: Vec<(String, Vec<String>)>,
    /// Users whose manager was not linked yet when they were applied.
    unresolved: Vec<UpstreamUser>,
    /// Of a resumed job: the users it has a result for already.
    reported: HashSet<String>,
    /// What the job says while it runs.
    note: Option<&'static str>,
    /// In a dry run, the ids of the users it would create.
    previewed: HashSet<String>,
    /// The connection's part of every digest.
    salt: [u8; 32],
    /// The restricted fields of a user the connection creates.
    restricted: Value,
    /// Ids not to name as a manager: users planned by this run it could not create, and
    /// linked users deleted in Cairn.
    not_created: HashSet<String>,
}

impl Run {
    fn error(&mut self, username: Option<String>, user_id: Option<String>, message: String) {
        self.seq += 1;
        self.counts.add("error");
        self.results.push(JobResult {
            seq: self.seq,
            username,
            user_id,
            outcome: "error".into(),
            message: Some(message),
        });
    }

    /// What managers and group mirroring need to know of a user the run met.
    fn remember(&mut self, u: &UpstreamUser, id: &str) {
        self.by_dn.insert(dirsync::dn_key(&u.dn), id.to_string());
        if !u.member_of.is_empty() {
            self.member_of.push((id.to_string(), u.member_of.iter().map(|d| dirsync::dn_key(d)).collect()));
        }
    }

    /// Records an upstream user's outcome in a job result (numbered `seq`), the counts, and
    /// the maps managers and group mirroring read.
    fn settle(&mut self, u: &UpstreamUser, seq: i64, out: Result<(&'static str, String, String)>) {
        let (outcome, uid, msg) = match out {
            Ok((o, id, m)) => (o, Some(id), m),
            Err(e) => ("error", None, e.to_string()),
        };
        if let Some(id) = &uid {
            self.remember(u, id);
            if self.dry_run && outcome == "created" {
                self.previewed.insert(id.clone());
            }
        }
        self.counts.add(outcome);
        // A result says what the sync did; users it left as they were are only counted.
        if outcome == "unchanged" && msg.is_empty() {
            return;
        }
        self.results.push(JobResult {
            seq,
            username: Some(u.username.clone()),
            user_id: uid,
            outcome: outcome.into(),
            message: Some(msg).filter(|m| !m.is_empty()),
        });
    }
}

/// See [`Directory::plan`].
struct Plan {
    input: UserInput,
    outcome: &'static str,
    note: String,
    suspended: bool,
}

impl Plan {
    /// Nothing to write: no field, no state.
    fn is_noop(&self) -> bool {
        let i = &self.input;
        i.username.is_none() && i.email.is_none() && i.profile.is_empty() && i.state.is_none()
    }
}

/// A new upstream user for the [`Builder`]: its result's number, the entry, its digest.
type Fresh = (i64, UpstreamUser, String);

/// Builds the new users of a sync's pages and binds their statements, on a blocking thread,
/// while the sync writes the page before.
struct Builder {
    dir: Directory,
    c: Connection,
    org: crate::Organization,
    restricted: Value,
    salt: [u8; 32],
    ctx: Ctx,
    job: String,
    /// Upstream DN (normalized) → id of every user built in this run: a new user's manager
    /// may be another new user, of this page or one before.
    planned: HashMap<String, String>,
}

/// A page of new users ready to write (see [`Directory::write_new`]).
struct NewPage {
    users: Vec<cairn_domain::User>,
    /// Each user's entry, parallel to `users`.
    entries: Vec<Fresh>,
    /// Entries that could not become users, and why.
    failed: Vec<(i64, UpstreamUser, Error)>,
    /// Users whose manager was not met yet (the second pass sets it).
    unresolved: Vec<UpstreamUser>,
    insert: cairn_store::Prepared,
    events: cairn_store::Prepared,
    links: cairn_store::Prepared,
}

impl Builder {
    fn build(&mut self, fresh: Vec<Fresh>) -> NewPage {
        let mut page = NewPage {
            users: Vec::with_capacity(fresh.len()),
            entries: Vec::with_capacity(fresh.len()),
            failed: Vec::new(),
            unresolved: Vec::new(),
            insert: Default::default(),
            events: Default::default(),
            links: Default::default(),
        };
        for (seq, u, digest) in fresh {
            match self.dir.build_new(&self.c, &u, &self.org, self.restricted.clone()) {
                Ok(user) => {
                    self.planned.insert(dirsync::dn_key(&u.dn), user.id.clone());
                    page.users.push(user);
                    page.entries.push((seq, u, digest));
                }
                Err(e) => page.failed.push((seq, u, e)),
            }
        }
        // Managers once the page's users all have ids: a manager may come after its reports.
        for (user, (_, u, digest)) in page.users.iter_mut().zip(page.entries.iter_mut()) {
            let Some(dn) = u.manager_dn.as_deref().filter(|d| !d.is_empty() && !u.fields.contains_key("manager"))
            else {
                continue;
            };
            match self.planned.get(&dirsync::dn_key(dn)).filter(|id| **id != user.id) {
                Some(id) => {
                    user.profile.insert("manager".into(), json!(id));
                    u.fields.insert("manager".into(), json!(id));
                    *digest = self::digest(&self.salt, u);
                }
                None => page.unresolved.push(u.clone()),
            }
        }
        let store = self.dir.store();
        let links: Vec<Link> =
            page.users.iter().zip(&page.entries).map(|(user, (_, u, d))| new_link(u, user, d)).collect();
        page.insert = store.prepare_new_users(&page.users);
        page.events = self.dir.user_create_events(&page.users, &self.ctx, &self.job, "adi", &creation_mail(&self.c));
        page.links = store.prepare_links(&self.c.id, "user", &links);
        page
    }
}

/// The actor and source of a sync's changes.
fn sync_ctx(c: &Connection) -> Ctx {
    Ctx::new(
        Actor { kind: "system".into(), id: Some(c.id.clone()), name: Some(format!("directory sync: {}", c.name)) },
        "adi",
        None,
    )
}

#[derive(Debug, Default, Clone, Copy, serde::Serialize, serde::Deserialize)]
#[serde(default)]
pub struct SyncCounts {
    pub created: i64,
    pub updated: i64,
    pub unchanged: i64,
    pub suspended: i64,
    pub reactivated: i64,
    pub error: i64,
    pub groups: i64,
}

impl SyncCounts {
    fn add(&mut self, outcome: &str) {
        match outcome {
            "created" => self.created += 1,
            "updated" => self.updated += 1,
            "unchanged" => self.unchanged += 1,
            "suspended" => self.suspended += 1,
            "reactivated" => self.reactivated += 1,
            _ => self.error += 1,
        }
    }
    fn json(&self) -> Value {
        serde_json::to_value(self).expect("counts serialize")
    }
}

impl Directory {
    // ---- connections --------------------------------------------------------------------

    pub async fn directory_connections(&self, limit: i64, skip: i64) -> Result<(i64, Vec<Connection>)> {
        let mut c = self.store().read().await?;
        Ok(c.db().connections(limit, skip).await?)
    }

    pub async fn directory_connection(&self, id: &str) -> Result<Connection> {
        if !is_object_id(id) {
            return Err(no_such(id));
        }
        let mut c = self.store().read().await?;
        c.db().get_connection(id, false).await?.ok_or_else(|| no_such(id))
    }

    /// `POST /api/v2/directories`: one transaction with its event (never the password).
    pub async fn create_directory_connection(&self, ctx: &Ctx, body: &Value) -> Result<Connection> {
        let mut input = dirsync::parse_input(body, true).map_err(Error::Invalid)?;
        let password = input.bind_password.take();
        let key = self.secret_key()?;
        let mut c = dirsync::new_connection(self.new_id(), input, self.now());
        c.sealed_bind_password =
            password.filter(|p| !p.expose().is_empty()).map(|p| crate::secretbox::seal(key, p.expose().as_bytes()));
        check_tls(&c)?;
        if c.sync_interval_seconds > 0 {
            c.next_sync = Some(self.now() + chrono::Duration::seconds(c.sync_interval_seconds));
        }
        let mut tx = self.store().begin().await?;
        let (count, _) = tx.db().connections(0, 0).await?;
        if count >= MAX_CONNECTIONS {
            return Err(Error::Conflict(format!(
                "an organization has at most {MAX_CONNECTIONS} directory connections"
            )));
        }
        tx.db().insert_connection(&c).await.map_err(|e| match e {
            cairn_store::StoreError::Conflict(_) => {
                Error::Conflict(format!("a directory connection named '{}' already exists", c.name))
            }
            e => e.into(),
        })?;
        let ev = self.event(
            ctx,
            "directory_create",
            Some(("directory", &c.id, &c.name)),
            vec![],
            json!({ "connection": c.json() }),
        );
        tx.db().insert_event(&ev).await?;
        tx.commit().await?;
        Ok(c)
    }

    /// `PUT /api/v2/directories/{id}`: the fields given change; a `bindPassword` replaces the
    /// old one (an empty one removes it).
    pub async fn update_directory_connection(&self, ctx: &Ctx, id: &str, body: &Value) -> Result<Connection> {
        if !is_object_id(id) {
            return Err(no_such(id));
        }
        let mut input = dirsync::parse_input(body, false).map_err(Error::Invalid)?;
        let password = input.bind_password.take();
        let key = self.secret_key()?;
        let mut tx = self.store().begin().await?;
        let old = tx.db().get_connection(id, true).await?.ok_or_else(|| no_such(id))?;
        let mut new = old.clone();
        if let (Some(Some(_)), None) = (&input.ca_cert, &input.fingerprint) {
            new.fingerprint = None;
        }
        if let (Some(Some(_)), None) = (&input.fingerprint, &input.ca_cert) {
            new.ca_cert = None;
        }
        new.apply(input);
        let mut changes = crate::json_changes("directory", &old.json(), &new.json());
        if let Some(p) = password {
            new.sealed_bind_password =
                Some(p).filter(|p| !p.expose().is_empty()).map(|p| crate::secretbox::seal(key, p.expose().as_bytes()));
            changes.push(cairn_domain::user::Change {
                field: "directory.bindPassword".into(),
                old: json!("(hidden)"),
                new: json!("(changed)"),
            });
        }
        check_tls(&new)?;
        if new.sync_interval_seconds != old.sync_interval_seconds {
            new.next_sync = (new.sync_interval_seconds > 0)
                .then(|| self.now() + chrono::Duration::seconds(new.sync_interval_seconds));
        }
        if changes.is_empty() {
            return Ok(old);
        }
        new.updated = self.now();
        tx.db().update_connection(&new).await.map_err(|e| match e {
            cairn_store::StoreError::Conflict(_) => {
                Error::Conflict(format!("a directory connection named '{}' already exists", new.name))
            }
            e => e.into(),
        })?;
        let ev = self.event(ctx, "directory_update", Some(("directory", id, &new.name)), changes, json!({}));
        tx.db().insert_event(&ev).await?;
        tx.commit().await?;
        Ok(new)
    }

    /// `DELETE /api/v2/directories/{id}`: the connection and its links; the users and groups
    /// it created stay (Cairn's own from now on).
    pub async fn delete_directory_connection(&self, ctx: &Ctx, id: &str) -> Result<Connection> {
        if !is_object_id(id) {
            return Err(no_such(id));
        }
        let mut tx = self.store().begin().await?;
        let old = tx.db().get_connection(id, true).await?.ok_or_else(|| no_such(id))?;
        tx.db().delete_connection(id).await?;
        let ev = self.event(ctx, "directory_delete", Some(("directory", id, &old.name)), vec![], json!({}));
        tx.db().insert_event(&ev).await?;
        tx.commit().await?;
        Ok(old)
    }

    fn bind_password(&self, c: &Connection) -> Result<Option<Secret>> {
        match &c.sealed_bind_password {
            Some(s) => {
                let b = crate::secretbox::open(self.secret_key()?, s)?;
                Ok(Some(Secret::new(
                    String::from_utf8(b).map_err(|_| Error::Internal("a sealed bind password is not text".into()))?,
                )))
            }
            None => Ok(None),
        }
    }

    // ---- sync ---------------------------------------------------------------------------

    /// `POST /api/v2/directories/{id}/sync`: starts a sync job in the background; its id.
    pub async fn start_directory_sync(&self, ctx: &Ctx, id: &str, dry_run: bool) -> Result<String> {
        let c = self.directory_connection(id).await?;
        if !self.claim_sync(&c.id, "") {
            return Err(Error::Conflict(format!("a sync of '{}' is already running", c.name)));
        }
        let job = match self.create_job(ctx, "directory_sync", json!({ "connection": c.id, "dry_run": dry_run })).await
        {
            Ok(j) => j,
            Err(e) => {
                self.release_sync(&c.id, "");
                return Err(e);
            }
        };
        self.inner.dirsyncs.lock().expect("dirsyncs").insert(c.id.clone(), job.clone());
        {
            let mut tx = self.store().begin().await?;
            tx.db().set_connection_job(&c.id, &job).await?;
            tx.commit().await?;
        }
        self.spawn_sync(c, job.clone(), dry_run, false);
        Ok(job)
    }

    /// Marks connection `id` as syncing under `job`, unless a sync of it runs already.
    fn claim_sync(&self, id: &str, job: &str) -> bool {
        let mut running = self.inner.dirsyncs.lock().expect("dirsyncs");
        if running.contains_key(id) {
            return false;
        }
        running.insert(id.to_string(), job.to_string());
        true
    }

    /// Gives back connection `id`'s place, if `job` still holds it: a run gives it back before
    /// it reports itself finished (whoever sees the job done may start the next sync at once),
    /// and again, doing nothing then, however it ends.
    fn release_sync(&self, id: &str, job: &str) {
        if let Ok(mut running) = self.inner.dirsyncs.lock() {
            if running.get(id).is_some_and(|j| j == job) {
                running.remove(id);
            }
        }
    }

    /// Runs a sync in the background; its connection is marked running until it ends.
    fn spawn_sync(&self, c: Connection, job: String, dry_run: bool, resume: bool) {
        let dir = self.clone();
        tokio::spawn(async move {
            // The place is given back however the run ends (an error, a panic).
            struct Running(Directory, String, String);
            impl Drop for Running {
                fn drop(&mut self) {
                    self.0.release_sync(&self.1, &self.2);
                }
            }
            let _running = Running(dir.clone(), c.id.clone(), job.clone());
            if let Err(e) = dir.run_directory_sync(&c, &job, dry_run, resume).await {
                tracing::error!(job = %job, error = %e, "directory sync failed");
                dir.release_sync(&c.id, &job);
                let _ = dir.progress(&job, "failed", 0, 0, &SyncCounts::default(), Some(&e.to_string())).await;
            }
        });
    }

    /// Resumes the syncs a stopped server left unfinished (marked interrupted at start): each
    /// runs again under its own job, keeping the results it had, and reports only what it
    /// does beyond them. A preview is not resumed. Returns how many were.
    pub async fn resume_interrupted_directory_syncs(&self) -> Result<usize> {
        let (_, all) = self.directory_connections(MAX_CONNECTIONS, 0).await?;
        let mut resumed = 0;
        for c in all {
            let Some(id) = c.last_job.clone() else { continue };
            let j = {
                let mut r = self.store().read().await?;
                r.db().get_job(&id).await?
            };
            let Some(j) = j.filter(|j| j.kind == "directory_sync" && j.status == "interrupted") else { continue };
            if j.params.get("dry_run").and_then(Value::as_bool) == Some(true) {
                continue;
            }
            if !self.claim_sync(&c.id, &id) {
                continue;
            }
            // Claimed once however many processes start together.
            let won = {
                let mut tx = self.store().begin().await?;
                let won = tx.db().resume_job(&id, self.now()).await?;
                tx.commit().await?;
                won
            };
            if !won {
                self.release_sync(&c.id, &id);
                continue;
            }
            tracing::warn!(job = %id, connection = %c.id, "resuming a directory sync the server stopped in");
            self.spawn_sync(c, id, false, true);
            resumed += 1;
        }
        Ok(resumed)
    }

    /// The job of a sync of connection `id`.
    pub async fn directory_sync_job(&self, id: &str, job: &str) -> Result<cairn_domain::Job> {
        let j = self.job(job).await?;
        if j.kind != "directory_sync" || j.params.get("connection").and_then(Value::as_str) != Some(id) {
            return Err(Error::NotFound(format!("no sync job '{job}' of directory connection '{id}'")));
        }
        Ok(j)
    }

    async fn progress(
        &self,
        job: &str,
        status: &str,
        done: usize,
        total: usize,
        counts: &SyncCounts,
        msg: Option<&str>,
    ) -> Result<()> {
        let mut tx = self.store().begin().await?;
        tx.db()
            .update_job(
                job,
                &JobUpdate {
                    status,
                    processed: done as i64,
                    total: total as i64,
                    counts: &counts.json(),
                    message: msg,
                },
                self.now(),
            )
            .await?;
        tx.commit().await?;
        Ok(())
    }

    /// Runs one sync of `c` for job `job`; the job records failure as well as success.
    ///
    /// The upstream is read by a task of its own, a page at a time, while the pages before are
    /// applied: memory holds a few pages, the links and a DN map, never the whole upstream.
    pub async fn run_directory_sync(
        &self,
        c: &Connection,
        job: &str,
        dry_run: bool,
        resume: bool,
    ) -> Result<SyncCounts> {
        let started = Instant::now();
        // A resumed job keeps its results, counts and numbering; users it reported before are
        // not reported again when they turn out unchanged now.
        let (mut counts, mut seq, mut reported) = (SyncCounts::default(), 0, HashSet::new());
        if resume {
            let mut r = self.store().read().await?;
            let mut db = r.db();
            if let Some(j) = db.get_job(job).await? {
                counts = serde_json::from_value(j.counts).unwrap_or_default();
                // Unchanged users have no result to tell them by: counted again from zero.
                counts.unchanged = 0;
            }
            let (_, before) = db.job_results(job, None, i64::MAX, 0).await?;
            seq = before.iter().map(|r| r.seq).max().unwrap_or(0);
            reported = before.into_iter().filter_map(|r| r.user_id).collect();
        }
        let note = resume.then_some("resumed after the server restarted");
        self.progress(job, "running", seq as usize, 0, &counts, note).await?;
        let pw = self.bind_password(c)?;
        let (tx, mut rx) = tokio::sync::mpsc::channel(2);
        let reader = AbortOnDrop(tokio::spawn(read_upstream(c.clone(), pw, tx)));
        let links: HashMap<String, (Link, Option<bool>)> = {
            let mut r = self.store().read().await?;
            r.db().user_links(&c.id).await?
        };
        // upstream DN → local user id, for managers and group membership: linked users the
        // filter no longer returns keep the memberships the upstream still lists.
        let by_dn = links.values().map(|(l, _)| (dirsync::dn_key(&l.dn), l.local_id.clone())).collect();
        let not_created = links.values().filter(|(_, t)| t.is_none()).map(|(l, _)| l.local_id.clone()).collect();
        let links_len = links.len();
        let mut run = Run {
            connection: c.id.clone(),
            job: job.to_string(),
            dry_run,
            ctx: sync_ctx(c),
            links,
            by_dn,
            counts,
            results: Vec::new(),
            refresh: Vec::new(),
            seq,
            reported,
            note,
            previewed: HashSet::new(),
            salt: salt(c),
            restricted: dirsync::restricted_fields(c, None),
            // As many as were linked, the likely count: growing a set of 100,000 ids rehashes it.
            seen: HashSet::with_capacity(links_len),
            member_of: Vec::new(),
            unresolved: Vec::new(),
            not_created,
        };
        let mut groups = None;
        // New users are built and bound on a blocking thread while the page before is written.
        let mut builder = match dry_run {
            true => None,
            false => Some(Builder {
                dir: self.clone(),
                c: c.clone(),
                org: self.organization().await?,
                restricted: run.restricted.clone(),
                salt: run.salt,
                ctx: run.ctx.clone(),
                job: job.to_string(),
                planned: HashMap::new(),
            }),
        };
        let mut building: Option<tokio::task::JoinHandle<(NewPage, Builder)>> = None;
        // New users are written on one connection kept for the run (its page cache carries
        // over; checkpoints are left to another connection).
        let mut writer = match dry_run {
            true => None,
            false => Some(self.store().writer().await?),
        };
        // A first import into a small directory drops the user search indexes and builds
        // them once at the end, as a large CSV import does (SQLite; put back at the next start
        // if the server stops meanwhile).
        let mut may_reindex = !dry_run && run.links.is_empty() && {
            let mut r = self.store().read().await?;
            r.db().count_users_by_state().await?.iter().map(|(_, n)| n).sum::<i64>() < REINDEX_MAX_USERS
        };
        let mut reindexed = false;
        let mut noted = Instant::now();
        let pages = async {
            let failed = loop {
                match rx.recv().await {
                    Some(Read::Users(page)) => {
                        let fresh = self.apply_users(c, &mut run, page, writer.as_mut()).await?;
                        if std::mem::take(&mut may_reindex) && fresh.len() >= PAGE as usize {
                            if let Some(w) = writer.as_mut() {
                                // What the first page sets tells which partial indexes the
                                // load would enter.
                                let sample: Vec<cairn_domain::User> = fresh
                                    .iter()
                                    .map(|(_, u, _)| {
                                        let mut x = cairn_domain::User::new(
                                            "",
                                            u.username.as_str(),
                                            "",
                                            State::Staged,
                                            self.now(),
                                        );
                                        x.profile = u.fields.clone();
                                        x
                                    })
                                    .collect();
                                let mut tx = w.begin().await?;
                                reindexed = tx.db().drop_user_search_indexes(&sample).await?;
                                tx.commit().await?;
                            }
                        }
                        // The page before was built while this one was applied; it is written
                        // while this one is built.
                        let mut ready = None;
                        if let Some(h) = building.take() {
                            let (page, b) =
                                h.await.map_err(|e| Error::Internal(format!("directory sync worker: {e}")))?;
                            builder = Some(b);
                            ready = Some(page);
                        }
                        building = match (fresh.is_empty(), builder.take()) {
                            (false, Some(mut b)) => Some(tokio::task::spawn_blocking(move || {
                                let page = b.build(fresh);
                                (page, b)
                            })),
                            (_, b) => {
                                builder = b;
                                None
                            }
                        };
                        match (ready.take(), writer.as_mut()) {
                            (Some(p), Some(w)) => self.write_new(c, &mut run, p, w).await?,
                            (_, w) => {
                                if let Some(w) = w {
                                    w.commit_held().await?;
                                }
                                // A page that changed nothing only moves the progress on.
                                if !run.results.is_empty()
                                    || !run.refresh.is_empty()
                                    || noted.elapsed() >= PROGRESS_EVERY
                                {
                                    self.write_page(&mut run, "running").await?;
                                    noted = Instant::now();
                                }
                            }
                        }
                    }
                    Some(Read::Groups(gs, skipped)) => {
                        for (dn, why) in skipped {
                            run.error(None, None, format!("{}: {why}", shown_dn(&dn)));
                        }
                        groups = Some(gs);
                    }
                    Some(Read::Done) => break None,
                    Some(Read::Failed(m)) => break Some(m),
                    None => break Some("the upstream reader stopped unexpectedly".to_string()),
                }
            };
            drop(reader);
            if let (Some(h), Some(w)) = (building.take(), writer.as_mut()) {
                let (page, _) = h.await.map_err(|e| Error::Internal(format!("directory sync worker: {e}")))?;
                self.write_new(c, &mut run, page, w).await?;
            }
            Ok::<_, Error>(failed)
        }
        .await;
        if let Some(mut w) = writer.take() {
            let held = w.commit_held().await;
            // Whatever happened, the indexes come back before anything else reads users.
            if reindexed {
                w.build_user_search_indexes().await?;
            }
            w.finish().await?;
            held?;
        }
        let failed = pages?;
        if let Some(m) = failed {
            // What was applied stays (a re-run converges); whoever was not read is not taken
            // for a leaver.
            let read = run.seq;
            let m = match read {
                0 => m,
                n => format!(
                    "{m} — after {n} entries, which were applied; nobody was suspended for missing and no group \
                     was mirrored in this run"
                ),
            };
            if read > 0 {
                run.error(None, None, m.clone());
                self.write_page(&mut run, "running").await?;
            }
            let ev = self.event(
                &run.ctx,
                "directory_sync_failed",
                Some(("directory", &c.id, &c.name)),
                vec![],
                json!({ "job": job, "reason": m, "counts": run.counts }),
            );
            let mut tx = self.store().begin().await?;
            tx.db().insert_event(&ev).await?;
            tx.commit().await?;
            let (seq, counts) = (run.seq as usize, run.counts);
            drop(run);
            self.release_sync(&c.id, job);
            self.progress(job, "failed", seq, seq, &counts, Some(&m)).await?;
            return Ok(counts);
        }
        // Second pass: managers created by this sync (not in a dry run, which created nobody).
        if !dry_run {
            for mut u in std::mem::take(&mut run.unresolved) {
                let dn = u.manager_dn.clone().unwrap_or_default();
                let (Some(mid), Some(local)) =
                    (run.by_dn.get(&dirsync::dn_key(&dn)).cloned(), run.by_dn.get(&dirsync::dn_key(&u.dn)).cloned())
                else {
                    continue;
                };
                u.fields.insert("manager".into(), json!(mid));
                let l = Link {
                    upstream_id: u.upstream_id.clone(),
                    local_id: local,
                    dn: u.dn.clone(),
                    suspended: u.disabled,
                    ..Default::default()
                };
                let digest = digest(&run.salt, &u);
                if let Err(e) = self.sync_user(&run.ctx, c, &u, Some(&l), &digest, false).await {
                    run.error(Some(u.username.clone()), Some(l.local_id.clone()), format!("manager {dn}: {e}"));
                }
            }
        }
        // Linked users the upstream no longer returns: out of the filter, or deleted.
        for (l, _) in std::mem::take(&mut run.links).into_values() {
            run.seq += 1;
            let r = self.suspend_gone(&run.ctx, c, &l, dry_run).await;
            let (outcome, msg) = match r {
                Ok(Some(m)) => ("suspended", m),
                Ok(None) => ("unchanged", "no longer upstream; already suspended".into()),
                Err(e) => ("error", e.to_string()),
            };
            run.counts.add(outcome);
            run.results.push(JobResult {
                seq: run.seq,
                username: None,
                user_id: Some(l.local_id.clone()),
                outcome: outcome.into(),
                message: Some(msg),
            });
            if run.results.len() >= RESULT_BATCH {
                self.write_page(&mut run, "running").await?;
            }
        }
        self.write_page(&mut run, "running").await?;
        if let Some(groups) = groups {
            let (n, errors) = match self.sync_groups(&run.ctx, c, &groups, &run.by_dn, &run.member_of, dry_run).await {
                Ok(x) => x,
                Err(e) => (0, vec![format!("groups: {e}")]),
            };
            run.counts.groups = n;
            for m in errors {
                run.error(None, None, m);
            }
        }
        self.write_page(&mut run, "running").await?;
        let counts = run.counts;
        let summary = json!({ "job": job, "dry_run": dry_run, "counts": counts });
        if !dry_run {
            let ev = self.event(&run.ctx, "directory_sync", Some(("directory", &c.id, &c.name)), vec![], summary);
            let mut tx = self.store().begin().await?;
            tx.db().insert_event(&ev).await?;
            tx.commit().await?;
        }
        let (seq, note) = (run.seq as usize, run.note);
        // What the run holds goes first (a hundred thousand links take a while to free), then
        // the place: whoever sees the job done may start the next sync at once.
        drop(run);
        self.release_sync(&c.id, job);
        self.progress(job, "done", seq, seq, &counts, note).await?;
        tracing::info!(job = %job, connection = %c.id, entries = seq, seconds = started.elapsed().as_secs_f64(), "directory sync done");
        Ok(counts)
    }

    /// Applies one page of upstream users: an unchanged linked user from its link alone, the
    /// other linked users after reading them back. New users are returned for the
    /// [`Builder`] (in a dry run they are previewed here, one by one).
    async fn apply_users(
        &self,
        c: &Connection,
        run: &mut Run,
        page: Vec<Mapped>,
        writer: Option<&mut cairn_store::Writer>,
    ) -> Result<Vec<Fresh>> {
        let mut fresh: Vec<Fresh> = Vec::new();
        let mut compare: Vec<(i64, UpstreamUser, Link, String)> = Vec::new();
        for item in page {
            let mut u = match item {
                Ok(u) => u,
                Err((dn, why)) => {
                    run.error(None, None, format!("{}: {why}", shown_dn(&dn)));
                    continue;
                }
            };
            if !run.seen.insert(id_key(&u.upstream_id)) {
                let m = format!("{} repeats the stable id {} of an earlier entry", u.dn, u.upstream_id);
                run.error(Some(u.username.clone()), None, m);
                continue;
            }
            run.seq += 1;
            let link = run.links.remove(&u.upstream_id);
            let batch = link.is_none() && !run.dry_run;
            // Managers: a DN linked already resolves now; one created by this sync on a
            // second pass. An unresolved DN leaves the manager as it is.
            match u.manager_dn.as_deref() {
                None => {}
                Some("") => {
                    u.fields.insert("manager".into(), Value::Null);
                }
                // A preview's new users were never written: not a manager to point at.
                Some(dn) => match run.by_dn.get(&dirsync::dn_key(dn)).filter(|id| !run.previewed.contains(*id)) {
                    Some(id) if !(batch && run.not_created.contains(id)) => {
                        u.fields.insert("manager".into(), json!(id));
                    }
                    // The builder looks among the users this run built before, or leaves it
                    // to the second pass.
                    _ if batch => {}
                    _ => run.unresolved.push(u.clone()),
                },
            }
            let digest = digest(&run.salt, &u);
            match link {
                // Unchanged upstream since the sync last applied it, the user untouched in
                // Cairn since, and no leave or return pending: nothing to read or write, and
                // only counted (a re-sync lists what it changed). A user the run this one
                // resumes reported already is not counted twice.
                Some((l, untouched))
                    if l.dn == u.dn
                        && l.digest.as_deref() == Some(digest.as_str())
                        && untouched == Some(true)
                        && l.suspended == u.disabled =>
                {
                    if run.reported.contains(&l.local_id) {
                        run.seq -= 1;
                    } else {
                        run.counts.add("unchanged");
                    }
                    // Its DN is the link's: known to `by_dn` since the run began.
                    if !u.member_of.is_empty() {
                        run.remember(&u, &l.local_id);
                    }
                }
                Some((l, _)) => compare.push((run.seq, u, l, digest)),
                None if batch => fresh.push((run.seq, u, digest)),
                None => {
                    let out = self.sync_user(&run.ctx, c, &u, None, &digest, run.dry_run).await;
                    run.settle(&u, run.seq, out);
                }
            }
        }
        if !compare.is_empty() {
            // Their writes take the write lock in turn with everyone's.
            if let Some(w) = writer {
                w.commit_held().await?;
            }
            let ids: Vec<String> = compare.iter().map(|(_, _, l, _)| l.local_id.clone()).collect();
            let current: HashMap<String, cairn_domain::User> = {
                let mut r = self.store().read().await?;
                r.db().users_by_ids(&ids).await?.into_iter().map(|u| (u.id.clone(), u)).collect()
            };
            for (seq, u, l, digest) in compare {
                let same = current.get(&l.local_id).filter(|x| {
                    l.dn == u.dn && self.plan(c, &u, &l, x).is_ok_and(|p| p.is_noop() && p.suspended == l.suspended)
                });
                let out = match same {
                    // Unchanged, but the link did not know it (the first re-sync after an
                    // upgrade, or the user was touched in Cairn): the link learns it.
                    Some(x) => {
                        let local_id = l.local_id.clone();
                        run.refresh.push(Link { digest: Some(digest), user_updated: Some(x.updated), ..l });
                        Ok(("unchanged", local_id, String::new()))
                    }
                    None => self.sync_user(&run.ctx, c, &u, Some(&l), &digest, run.dry_run).await,
                };
                run.settle(&u, seq, out);
            }
        }
        Ok(fresh)
    }

    /// Writes a page of new users the [`Builder`] made ready: the users, their events, links
    /// and activation mail, with the results gathered so far and the progress, in one
    /// transaction. Users the batch cannot take (another user holds their username or e-mail)
    /// go one by one, which says why; so does the whole page when one of its users names as
    /// manager a user this run could not create.
    async fn write_new(
        &self,
        c: &Connection,
        run: &mut Run,
        page: NewPage,
        writer: &mut cairn_store::Writer,
    ) -> Result<()> {
        let NewPage { users, entries, failed, unresolved, insert, events, links } = page;
        for (seq, u, e) in failed {
            run.settle(&u, seq, Err(e));
        }
        run.unresolved.extend(unresolved);
        let safe = !users.iter().any(|u| u.text("manager").is_some_and(|m| run.not_created.contains(m)));
        let mut left: Vec<(cairn_domain::User, (i64, UpstreamUser, String))> = Vec::new();
        if !safe || users.is_empty() {
            left.extend(users.into_iter().zip(entries));
        } else {
            // What the batch settles is taken back if it fails.
            let (results, counts) = (run.results.len(), run.counts);
            writer.hold().await?;
            let mut tx = writer.part().await?;
            let batch = async {
                let mut db = tx.db();
                let inserted = db.insert_new_users(&users, insert).await?;
                let all = inserted.is_none();
                let inserted = inserted.unwrap_or_default();
                let is_in = |u: &cairn_domain::User| all || inserted.contains(&u.id);
                // A user inserted whose manager was left out would point at nobody.
                if !all {
                    let page: HashSet<&str> = users.iter().map(|u| u.id.as_str()).collect();
                    let dangling = |m: &str| page.contains(m) && !inserted.contains(m);
                    if users.iter().any(|u| is_in(u) && u.text("manager").is_some_and(dangling)) {
                        return Ok::<_, Error>(None);
                    }
                }
                let mail = creation_mail(c);
                if all {
                    db.execute_prepared(events).await?;
                    db.execute_prepared(links).await?;
                } else {
                    let (kept, kept_links): (Vec<&cairn_domain::User>, Vec<Link>) = users
                        .iter()
                        .zip(&entries)
                        .filter(|(u, _)| is_in(u))
                        .map(|(user, (_, up, d))| (user, new_link(up, user, d)))
                        .unzip();
                    db.execute_prepared(self.user_create_events(kept, &run.ctx, &run.job, "adi", &mail)).await?;
                    db.execute_prepared(self.store().prepare_links(&c.id, "user", &kept_links)).await?;
                }
                let org = crate::org_of(&mut db).await?;
                self.mail_new_users(&mut db, &org.settings.name, users.iter().filter(|u| is_in(u)), &mail).await?;
                for (user, (seq, u, _)) in users.iter().zip(&entries).filter(|(user, _)| is_in(user)) {
                    let note = if u.disabled { "created SUSPENDED: disabled upstream" } else { "" };
                    run.settle(u, *seq, Ok(("created", user.id.clone(), note.to_string())));
                }
                self.write_page_in(&mut db, run, "running").await?;
                Ok(Some((!all).then_some(inserted)))
            }
            .await;
            let batch = match batch {
                Ok(Some(x)) => match tx.commit().await {
                    Ok(()) => {
                        run.results.clear();
                        run.refresh.clear();
                        Ok(Some(x))
                    }
                    Err(e) => Err(e.into()),
                },
                other => {
                    let _ = tx.rollback().await;
                    other
                }
            };
            match batch {
                // Thousands of maps the builder's thread allocated: freed on a blocking
                // thread, not on the loop that writes the next page.
                Ok(Some(None)) => drop(tokio::task::spawn_blocking(move || drop((users, entries)))),
                Ok(Some(Some(inserted))) => {
                    left.extend(users.into_iter().zip(entries).filter(|(u, _)| !inserted.contains(&u.id)))
                }
                Ok(None) => left.extend(users.into_iter().zip(entries)),
                Err(e) => {
                    run.results.truncate(results);
                    run.counts = counts;
                    tracing::warn!(job = %run.job, error = %e, "directory sync: batch creation failed; creating one by one");
                    left.extend(users.into_iter().zip(entries));
                }
            }
        }
        if left.is_empty() && run.results.is_empty() && run.refresh.is_empty() {
            // All written with the page.
            if writer.held_for().is_some_and(|t| t >= COMMIT_AFTER) {
                writer.commit_held().await?;
            }
            return Ok(());
        }
        writer.commit_held().await?;
        // One by one: managers before the users naming them, when both are here.
        let ids: HashSet<String> = left.iter().map(|(u, _)| u.id.clone()).collect();
        left.sort_by_key(|(u, _)| u.text("manager").is_some_and(|m| ids.contains(m)));
        for (user, (seq, u, digest)) in left {
            let id = user.id.clone();
            let out = self.create_built(&run.ctx, c, user, &u, &digest, &run.not_created).await;
            if out.is_err() {
                run.not_created.insert(id);
            }
            run.settle(&u, seq, out);
        }
        self.write_page(run, "running").await
    }

    /// Creates one user the [`Builder`] built, in its own transaction, with the checks of
    /// every other front end; a manager that does not exist is left out (and said).
    async fn create_built(
        &self,
        ctx: &Ctx,
        c: &Connection,
        mut user: cairn_domain::User,
        u: &UpstreamUser,
        digest: &str,
        not_created: &HashSet<String>,
    ) -> Result<(&'static str, String, String)> {
        let mut tx = self.store().begin().await?;
        let mut db = tx.db();
        let mut notes = Vec::new();
        if let Some(m) = user.text("manager").map(String::from) {
            if not_created.contains(&m) || db.get_user(&m).await?.is_none() {
                user.profile.remove("manager");
                notes.push(format!("manager {} was not created", u.manager_dn.as_deref().unwrap_or_default()));
            }
        }
        self.insert_new_user(&mut db, ctx, &user, "adi", &creation_mail(c)).await?;
        db.put_link(&c.id, "user", &new_link(u, &user, digest)).await?;
        tx.commit().await?;
        if u.disabled {
            notes.insert(0, "created SUSPENDED: disabled upstream".into());
        }
        Ok(("created", user.id, notes.join("; ")))
    }

    /// Writes what a run has gathered — job results, links that learnt their digest, the
    /// progress — in one transaction.
    async fn write_page(&self, run: &mut Run, status: &str) -> Result<()> {
        let mut tx = self.store().begin().await?;
        self.write_page_in(&mut tx.db(), run, status).await?;
        tx.commit().await?;
        run.results.clear();
        run.refresh.clear();
        Ok(())
    }

    /// [`Self::write_page`] in the caller's transaction (the caller clears `run.results` and
    /// `run.refresh` once it commits).
    async fn write_page_in(&self, db: &mut cairn_store::Db<'_>, run: &Run, status: &str) -> Result<()> {
        if !run.results.is_empty() {
            db.insert_job_results(&run.job, &run.results).await?;
        }
        if !run.dry_run && !run.refresh.is_empty() {
            db.put_links(&run.connection, "user", &run.refresh).await?;
        }
        let update = JobUpdate { status, processed: run.seq, total: 0, counts: &run.counts.json(), message: run.note };
        db.update_job(&run.job, &update, self.now()).await?;
        Ok(())
    }

    /// The user body the upstream asks for; `restricted` is the user's `restrictedFields`
    /// as the connection makes them ([`dirsync::restricted_fields`]).
    fn desired_fields(&self, c: &Connection, u: &UpstreamUser, restricted: Value) -> Map<String, Value> {
        let mut m = u.fields.clone();
        m.insert("restrictedFields".into(), restricted);
        if c.password_authority == Authority::Delegated {
            m.insert("delegatedAuthority".into(), json!({ "id": c.id, "name": "ActiveDirectory" }));
        }
        m
    }

    /// One upstream user: created, updated, suspended, reactivated or unchanged, in one
    /// transaction (rolled back in a dry run), its link recording `digest`. Returns the
    /// outcome, the user id and a note.
    async fn sync_user(
        &self,
        ctx: &Ctx,
        c: &Connection,
        u: &UpstreamUser,
        link: Option<&Link>,
        digest: &str,
        dry_run: bool,
    ) -> Result<(&'static str, String, String)> {
        let mut tx = self.store().begin().await?;
        let mut db = tx.db();
        let existing = match link {
            Some(l) => db.lock_user(&l.local_id).await?.map(|user| (l, user)),
            None => None,
        };
        let out = match existing {
            None => {
                let org = crate::org_of(&mut db).await?;
                let user = self.build_new(c, u, &org, dirsync::restricted_fields(c, None))?;
                self.insert_new_user(&mut db, ctx, &user, "adi", &creation_mail(c)).await?;
                db.put_link(&c.id, "user", &new_link(u, &user, digest)).await?;
                let note = if u.disabled { "created SUSPENDED: disabled upstream" } else { "" };
                ("created", user.id, note.to_string())
            }
            Some((l, user)) => {
                let Plan { input, mut outcome, note, suspended } = self.plan(c, u, l, &user)?;
                let id = user.id.clone();
                let (user, changed) = self.update_loaded_in(&mut db, ctx, user, input, false).await?;
                let nl = Link {
                    upstream_id: l.upstream_id.clone(),
                    local_id: id.clone(),
                    dn: u.dn.clone(),
                    suspended,
                    digest: Some(digest.to_string()),
                    user_updated: Some(user.updated),
                };
                let relink = nl != *l;
                if relink {
                    db.put_link(&c.id, "user", &nl).await?;
                }
                if !changed && outcome == "updated" {
                    outcome = "unchanged";
                }
                if !changed && !relink {
                    return Ok((outcome, id, note));
                }
                (outcome, id, note)
            }
        };
        if !dry_run {
            tx.commit().await?;
        }
        Ok(out)
    }

    /// The Cairn user a new upstream user becomes (not written).
    fn build_new(
        &self,
        c: &Connection,
        u: &UpstreamUser,
        org: &crate::Organization,
        restricted: Value,
    ) -> Result<cairn_domain::User> {
        // The connection's own list goes in after the checks: they are for what the upstream
        // sent (and would walk nine entries per user).
        let mut body = self.desired_fields(c, u, Value::Null);
        body.retain(|_, v| !v.is_null());
        body.insert("username".into(), json!(u.username));
        if !body.contains_key("email") {
            return Err(Error::invalid("email", format!("{} has no e-mail address upstream", u.dn)));
        }
        if u.disabled {
            body.insert("state".into(), json!("SUSPENDED"));
        }
        let mut input = parse_user_object(body, true)?;
        input.profile.insert("restrictedFields".into(), restricted);
        self.new_user(org, input, CreationSource::ManualEntry, "adi", None, self.now())
    }

    /// What an upstream user asks of its linked Cairn user: the update (empty when none),
    /// the outcome it would be, a note, and whether the link marks the user suspended by the
    /// sync.
    fn plan(&self, c: &Connection, u: &UpstreamUser, l: &Link, user: &cairn_domain::User) -> Result<Plan> {
        let desired = self.desired_fields(c, u, dirsync::restricted_fields(c, user.profile.get("restrictedFields")));
        let mut input = UserInput::default();
        if user.username != u.username {
            input.username = Some(u.username.clone());
        }
        for (k, v) in desired {
            if k == "email" {
                match v.as_str() {
                    Some(e) if !e.eq_ignore_ascii_case(&user.email) => {
                        let p = parse_user_input(&json!({ "email": e }), false)?;
                        input.email = p.email;
                    }
                    _ => {}
                }
                continue;
            }
            let cur = user.profile.get(&k).cloned().unwrap_or(Value::Null);
            let same = cur == v || (v.is_null() && crate::users::is_empty_value(&cur));
            if !same {
                input.profile.insert(k, v);
            }
        }
        if !input.profile.is_empty() {
            // Validates the values as any other update would.
            input.profile = parse_user_object(std::mem::take(&mut input.profile), false)?.profile;
        }
        let mut suspended = l.suspended;
        let mut outcome = "updated";
        let mut note = String::new();
        if u.disabled && user.state != State::Suspended {
            input.state = Some(State::Suspended);
            suspended = true;
            outcome = "suspended";
            note = "disabled upstream".into();
        } else if !u.disabled && l.suspended {
            if user.state == State::Suspended {
                input.state = Some(State::Activated);
                outcome = "reactivated";
                note = "enabled and back upstream".into();
            }
            suspended = false;
        }
        Ok(Plan { input, outcome, note, suspended })
    }

    /// A linked user the upstream no longer returns: suspended (unless it already is), and
    /// marked so it is reactivated on return. `None` when nothing changed.
    async fn suspend_gone(&self, ctx: &Ctx, c: &Connection, l: &Link, dry_run: bool) -> Result<Option<String>> {
        let mut tx = self.store().begin().await?;
        let mut db = tx.db();
        let Some(user) = db.lock_user(&l.local_id).await? else {
            // Deleted in Cairn: the link goes too.
            db.delete_link(&c.id, "user", &l.upstream_id).await?;
            if !dry_run {
                tx.commit().await?;
            }
            return Ok(None);
        };
        if user.state == State::Suspended {
            return Ok(None);
        }
        let input = UserInput { state: Some(State::Suspended), ..Default::default() };
        let name = user.username.clone();
        // No digest: the user's return is compared in full.
        let (user, _) = self.update_loaded_in(&mut db, ctx, user, input, false).await?;
        let gone = Link { suspended: true, digest: None, user_updated: Some(user.updated), ..l.clone() };
        db.put_link(&c.id, "user", &gone).await?;
        if !dry_run {
            tx.commit().await?;
        }
        Ok(Some(format!("{name} is no longer in the upstream's filter (or was deleted there)")))
    }

    /// Mirrors the upstream's groups: each linked by its stable id, named as upstream, with
    /// exactly the members the upstream lists (among the connection's users). Groups gone
    /// upstream are emptied and unlinked. Returns the groups changed.
    async fn sync_groups(
        &self,
        ctx: &Ctx,
        c: &Connection,
        groups: &[UpstreamGroup],
        by_dn: &HashMap<String, String>,
        member_of: &[(String, Vec<String>)],
        dry_run: bool,
    ) -> Result<(i64, Vec<String>)> {
        let links: HashMap<String, Link> = {
            let mut r = self.store().read().await?;
            r.db().links(&c.id, "group").await?.into_iter().map(|l| (l.upstream_id.clone(), l)).collect()
        };
        let mut changed = 0;
        let mut errors = Vec::new();
        let mut seen = HashSet::new();
        for g in groups {
            seen.insert(g.upstream_id.clone());
            let gkey = dirsync::dn_key(&g.dn);
            let mut want: HashSet<String> =
                g.members.iter().filter_map(|m| by_dn.get(&dirsync::dn_key(m))).cloned().collect();
            for (uid, of) in member_of {
                if of.contains(&gkey) {
                    want.insert(uid.clone());
                }
            }
            match self.sync_group(ctx, c, g, links.get(&g.upstream_id), &want, dry_run).await {
                Ok(true) => changed += 1,
                Ok(false) => {}
                Err(e) => errors.push(format!("group {}: {e}", g.name)),
            }
        }
        for l in links.values().filter(|l| !seen.contains(&l.upstream_id)) {
            let mut tx = self.store().begin().await?;
            let mut db = tx.db();
            if db.get_group(&l.local_id).await?.is_some() {
                let (_, have) = db.group_members(&l.local_id, i64::MAX, 0).await?;
                for rm in have {
                    self.change_membership_in(&mut db, ctx, &l.local_id, &rm, false).await?;
                }
            }
            db.delete_link(&c.id, "group", &l.upstream_id).await?;
            changed += 1;
            if !dry_run {
                tx.commit().await?;
            }
        }
        Ok((changed, errors))
    }

    /// One upstream group, in one transaction (rolled back in a dry run): created or renamed,
    /// linked, and its members made `want`. True when anything changed.
    async fn sync_group(
        &self,
        ctx: &Ctx,
        c: &Connection,
        g: &UpstreamGroup,
        link: Option<&Link>,
        want: &HashSet<String>,
        dry_run: bool,
    ) -> Result<bool> {
        let mut tx = self.store().begin().await?;
        let mut db = tx.db();
        let mut dirty = false;
        let local = match link {
            Some(l) => db.get_group(&l.local_id).await?,
            None => None,
        };
        let group = match local {
            Some(lg) => {
                if lg.name != g.name {
                    self.update_group_in(&mut db, ctx, &lg.id, &json!({ "name": g.name })).await?;
                    dirty = true;
                }
                lg
            }
            None => {
                if db.group_by_name(&g.name).await?.is_some() {
                    // A group of that name made in Cairn is not taken over.
                    return Err(Error::Conflict(format!(
                        "a group named '{}' already exists in Cairn and is not linked to this connection",
                        g.name
                    )));
                }
                dirty = true;
                let body = json!({ "name": g.name, "description": format!("mirrored from {}", c.name) });
                self.create_group_in(&mut db, ctx, &body).await?
            }
        };
        if link.is_none_or(|l| l.local_id != group.id || l.dn != g.dn) {
            let l = Link {
                upstream_id: g.upstream_id.clone(),
                local_id: group.id.clone(),
                dn: g.dn.clone(),
                ..Default::default()
            };
            db.put_link(&c.id, "group", &l).await?;
        }
        let (_, have) = db.group_members(&group.id, i64::MAX, 0).await?;
        let have: HashSet<String> = have.into_iter().collect();
        let moves = want.difference(&have).map(|u| (u, true)).chain(have.difference(want).map(|u| (u, false)));
        for (uid, add) in moves {
            match self.change_membership_in(&mut db, ctx, &group.id, uid, add).await {
                Ok(ch) => dirty |= ch,
                // A preview's new users were never written: they would be added.
                Err(Error::NotFound(_)) if dry_run => dirty = true,
                Err(e) => return Err(e),
            }
        }
        if !dry_run {
            tx.commit().await?;
        }
        Ok(dirty)
    }

    /// Starts the periodic syncs that are due, each claimed so one process runs it.
    pub async fn run_due_directory_syncs(&self) -> Result<usize> {
        let now = self.now();
        let (_, all) = self.directory_connections(MAX_CONNECTIONS, 0).await?;
        let mut started = 0;
        for c in all {
            let Some(due) = c.next_sync.filter(|t| *t <= now && c.sync_interval_seconds > 0) else { continue };
            let next = now + chrono::Duration::seconds(c.sync_interval_seconds);
            let mut tx = self.store().begin().await?;
            let won = tx.db().claim_connection_sync(&c.id, due, next).await?;
            tx.commit().await?;
            if !won {
                continue;
            }
            let ctx =
                Ctx::new(Actor { kind: "system".into(), id: None, name: Some("scheduler".into()) }, "scheduler", None);
            match self.start_directory_sync(&ctx, &c.id, false).await {
                Ok(_) => started += 1,
                Err(e) => tracing::warn!(connection = %c.id, error = %e, "periodic directory sync not started"),
            }
        }
        Ok(started)
    }

    // ---- delegated authentication -------------------------------------------------------

    /// Checks `password` by binding upstream as the user (§3.5): the user's DN from its link,
    /// else found by a search with the username escaped (RFC 4515). An empty password is never
    /// sent (an upstream would take it for an anonymous bind).
    pub(crate) async fn upstream_verify(
        &self,
        connection_id: &str,
        user_id: &str,
        username: &str,
        password: &Secret,
    ) -> Result<Upstream> {
        if password.expose().is_empty() {
            return Ok(Upstream::Answered(false));
        }
        let (c, link) = {
            let mut r = self.store().read().await?;
            let c = r.db().get_connection(connection_id, false).await?;
            let link = r.db().link_of(connection_id, user_id).await?;
            (c, link)
        };
        let Some(c) = c else {
            return Ok(Upstream::Unavailable(format!(
                "the delegated authority '{connection_id}' is no directory connection"
            )));
        };
        if self.inner.breakers.open(&c.id) {
            return Ok(Upstream::Unavailable(format!(
                "the upstream directory '{}' failed repeatedly; binds are paused for {}s (circuit breaker)",
                c.name,
                BREAKER_OPEN.as_secs()
            )));
        }
        let started = Instant::now();
        let r = self.bind_as(&c, link.map(|l| l.dn), username, password).await;
        metrics::histogram!("cairn_upstream_bind_seconds").record(started.elapsed().as_secs_f64());
        self.inner.breakers.record(&c.id, r.is_ok());
        Ok(match r {
            Ok(ok) => Upstream::Answered(ok),
            Err(m) => Upstream::Unavailable(format!("the upstream directory '{}' is unavailable: {m}", c.name)),
        })
    }

    async fn bind_as(
        &self,
        c: &Connection,
        dn: Option<String>,
        username: &str,
        password: &Secret,
    ) -> std::result::Result<bool, String> {
        let dn = match dn {
            Some(d) => d,
            None => {
                let pw = self.bind_password(c).map_err(|e| e.to_string())?;
                let mut ldap = service_bind(c, pw.as_ref()).await?;
                let attr = c.attr("username").unwrap_or_else(|| "uid".into());
                let filter = format!("(&{}({}={}))", c.user_filter, attr, ldap3::ldap_escape(username));
                let (rs, _) = timed("the user search", ldap.search(&c.user_base, Scope::Subtree, &filter, vec!["1.1"]))
                    .await?
                    .success()
                    .map_err(|e| format!("the user search failed: {}", upstream_error(e)))?;
                let _ = ldap.unbind().await;
                // Referrals are not entries: only a single entry names the user.
                let mut rs: Vec<_> = rs.into_iter().filter(|r| !r.is_ref() && !r.is_intermediate()).collect();
                match rs.len() {
                    1 => entry_of(rs.remove(0)).ok_or("the user search returned a malformed entry")?.dn,
                    // Unknown upstream (or ambiguous): a wrong password, as far as anyone is told.
                    _ => return Ok(false),
                }
            }
        };
        let mut ldap = connect(c).await?;
        let r = timed("the user bind", ldap.simple_bind(&dn, password.expose())).await?;
        let _ = ldap.unbind().await;
        match r.rc {
            0 => Ok(true),
            // invalidCredentials; inappropriateAuthentication; unwillingToPerform (AD: disabled).
            49 | 48 | 53 => Ok(false),
            rc => Err(format!("the bind answered {rc} {}", r.text)),
        }
    }

    /// The users of a connection, for the Actions menu's authority items: a connection's id
    /// and name (the `delegatedAuthority` value).
    pub async fn delegated_authority_of(&self, id: &str) -> Result<Value> {
        let c = self.directory_connection(id).await?;
        Ok(json!({ "id": c.id, "name": "ActiveDirectory" }))
    }
}

fn check_tls(c: &Connection) -> Result<()> {
    if (c.ca_cert.is_some() || c.fingerprint.is_some()) && !(c.starttls || c.url.starts_with("ldaps://")) {
        return Err(Error::invalid("url", "caCert or fingerprint need ldaps:// or startTls: true"));
    }
    if c.starttls && c.url.starts_with("ldaps://") {
        return Err(Error::invalid("startTls", "ldaps:// is TLS already; StartTLS is for ldap://"));
    }
    tls_config(c).map_err(|m| Error::invalid("caCert", m))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    use ldap3::asn1::{StructureTag, TagClass, PL};

    fn prim(b: &[u8]) -> StructureTag {
        StructureTag { class: TagClass::Universal, id: 4, payload: PL::P(b.to_vec()) }
    }
    fn cons(id: u64, v: Vec<StructureTag>) -> StructureTag {
        StructureTag { class: TagClass::Universal, id, payload: PL::C(v) }
    }
    fn app(id: u64, payload: PL) -> StructureTag {
        StructureTag { class: TagClass::Application, id, payload }
    }

    /// A search result entry as the upstream sends it: `[APPLICATION 4] { dn, { { type, { value… } }… } }`.
    fn result_entry(dn: &[u8], attrs: Vec<(&[u8], Vec<&[u8]>)>) -> StructureTag {
        let attrs =
            attrs.into_iter().map(|(t, vs)| cons(16, vec![prim(t), cons(17, vs.into_iter().map(prim).collect())]));
        app(4, PL::C(vec![prim(dn), cons(16, attrs.collect())]))
    }

    #[test]
    fn result_entries_are_read_and_malformed_ones_refused_without_a_panic() {
        let read = |t: StructureTag| entry_of(ldap3::ResultEntry::new(t));
        let guid: &[u8] = &[0xff, 0x00, 0x10, 0x80];
        let e = read(result_entry(
            b"uid=ann,ou=people,dc=x",
            vec![(b"uid", vec![b"ann"]), (b"objectGUID", vec![guid]), (b"memberOf", vec![b"cn=a", b"cn=b"])],
        ))
        .expect("a well-formed entry");
        assert_eq!(e.dn, "uid=ann,ou=people,dc=x");
        assert_eq!(e.first("UID").as_deref(), Some("ann"));
        assert_eq!(e.values("objectguid"), [guid.to_vec()], "binary values stay as sent");
        assert_eq!(e.texts("memberOf"), ["cn=a", "cn=b"]);
        assert!(read(result_entry(b"uid=x", vec![])).is_some_and(|e| e.attrs.is_empty()));

        let bad = [
            // not a search result entry
            app(5, PL::C(vec![])),
            // no DN, or a primitive where the sequence belongs
            app(4, PL::C(vec![])),
            app(4, PL::P(b"uid=x".to_vec())),
            // a DN that is not UTF-8
            result_entry(&[0xc3, 0x28], vec![]),
            // an attribute without its values
            app(4, PL::C(vec![prim(b"uid=x"), cons(16, vec![cons(16, vec![prim(b"uid")])])])),
        ];
        for t in bad {
            assert!(read(t).is_none());
        }
    }

    #[test]
    fn long_dns_are_cut_short_in_messages() {
        assert_eq!(shown_dn("uid=x,dc=example"), "uid=x,dc=example");
        let long = format!("cn={},dc=x", "é".repeat(300));
        let shown = shown_dn(&long);
        assert!(
            shown.len() <= 200 + "…".len() && shown.ends_with('…') && long.starts_with(shown.trim_end_matches('…'))
        );
    }

    #[test]
    fn breaker_opens_after_repeated_failures_and_closes_on_success() {
        let b = Breakers::default();
        for _ in 0..BREAKER_FAILURES - 1 {
            b.record("c", false);
            assert!(!b.open("c"), "still closed below the threshold");
        }
        b.record("c", false);
        assert!(b.open("c"), "open after {BREAKER_FAILURES} failures");
        assert!(!b.open("other"), "per connection");
        b.record("c", true);
        assert!(!b.open("c"), "a success closes it");
    }

    #[test]
    fn tls_settings_refuse_what_cannot_work() {
        let input = dirsync::parse_input(
            &json!({"name": "c", "url": "ldap://h", "userBase": "dc=x", "fingerprint": "ab".repeat(32)}),
            true,
        )
        .unwrap();
        let mut c = dirsync::new_connection("c1".into(), input, chrono::Utc::now());
        assert!(check_tls(&c).is_err(), "pinning needs TLS");
        c.starttls = true;
        assert!(check_tls(&c).is_ok());
        c.url = "ldaps://h".into();
        assert!(check_tls(&c).is_err(), "StartTLS over ldaps://");
        c.starttls = false;
        c.fingerprint = None;
        c.ca_cert = Some("-----BEGIN CERTIFICATE-----\nnot base64\n-----END CERTIFICATE-----\n".into());
        assert!(check_tls(&c).is_err(), "an unreadable CA certificate");
    }
}
