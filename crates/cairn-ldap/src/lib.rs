//! Cairn's LDAP front end (§10): the directory as an LDAPv3 tree on `ldap3_proto`, calling
//! only `cairn-directory`. Binds go through `Directory::authenticate`; searches read a model
//! of the tree kept coherent with every write (`model.rs`).
//!
//! Listeners: plain LDAP with StartTLS, and LDAPS; each connection is one task that reads a
//! message, answers it, and reads the next, so a client has one operation in flight and
//! pipelining past the decoder's buffer ends the connection. Limits: connections (past the
//! cap a new one is closed at once), idle time, message size.

mod entry;
mod filter;
mod model;
mod schema;
mod session;
mod tls;

use std::net::SocketAddr;
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use cairn_directory::Directory;
use futures_util::{SinkExt, StreamExt};
use ldap3_proto::proto::LdapResultCode;
use ldap3_proto::LdapCodec;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::TlsAcceptor;
use tokio_util::codec::Framed;

pub use entry::Base;
use session::{After, Session};

/// The LDAP front end's settings (§1.2).
#[derive(Debug, Clone)]
pub struct LdapConfig {
    /// Plain LDAP (with StartTLS); `None`: off.
    pub addr: Option<String>,
    /// LDAPS; `None`: off.
    pub ldaps_addr: Option<String>,
    pub base_dn: String,
    /// PEM certificate chain and key; both unset: a self-signed pair made once in the data
    /// directory.
    pub tls_cert: Option<String>,
    pub tls_key: Option<String>,
    pub limits: Limits,
}

#[derive(Debug, Clone)]
pub struct Limits {
    pub max_connections: usize,
    /// A connection with no message for this long is closed.
    pub idle_timeout: Duration,
    /// Largest message accepted; a larger one ends its connection.
    pub max_message_bytes: usize,
    /// Most entries a search without paging returns.
    pub size_limit: usize,
    /// Largest page of a paged search.
    pub max_page: usize,
    pub time_limit: Duration,
}

impl Default for Limits {
    fn default() -> Limits {
        Limits {
            max_connections: 1024,
            idle_timeout: Duration::from_secs(300),
            max_message_bytes: 64 * 1024,
            size_limit: 1000,
            max_page: 1000,
            time_limit: Duration::from_secs(60),
        }
    }
}

/// What every connection shares.
pub struct Shared {
    pub dir: Directory,
    pub tree: model::Tree,
    pub base: Base,
    pub limits: Limits,
    pub tls: Option<TlsAcceptor>,
    connections: AtomicUsize,
}

/// The running listeners' addresses and the TLS certificate's fingerprint.
pub struct Running {
    pub ldap: Option<SocketAddr>,
    pub ldaps: Option<SocketAddr>,
    /// SHA-256 of the certificate, colon-separated hex, for clients to pin.
    pub fingerprint: String,
    /// Whether the certificate was generated (and where it lives).
    pub generated_cert: Option<std::path::PathBuf>,
}

/// Starts the listeners; they run until the process ends or `stop` turns true.
pub async fn start(
    dir: Directory,
    cfg: LdapConfig,
    data_dir: &Path,
    stop: tokio::sync::watch::Receiver<bool>,
) -> Result<Running> {
    let Some(base) = Base::new(&cfg.base_dn) else {
        bail!("the LDAP base DN '{}' is not a DN (e.g. dc=example,dc=com)", cfg.base_dn);
    };
    let tls = tls::acceptor(cfg.tls_cert.as_deref(), cfg.tls_key.as_deref(), data_dir)?;
    let shared = Arc::new(Shared {
        tree: model::Tree::new(dir.clone()),
        dir,
        base,
        limits: cfg.limits.clone(),
        tls: Some(tls.acceptor),
        connections: AtomicUsize::new(0),
    });
    shared.dir.watch_changes();
    // Load the tree now, so the first client does not wait for it, but in the background:
    // on a large directory that takes seconds, and the other front ends need not wait. An
    // operation that comes first waits for it (`Tree::fresh`).
    let warm = shared.clone();
    tokio::spawn(async move {
        if let Err(e) = warm.tree.fresh().await {
            tracing::warn!(error = %e, "cannot load the LDAP tree; the first LDAP operation tries again");
        }
    });
    let mut running = Running { ldap: None, ldaps: None, fingerprint: tls.fingerprint, generated_cert: tls.generated };
    if let Some(a) = &cfg.addr {
        let l = TcpListener::bind(a).await.with_context(|| format!("cannot listen for LDAP on {a}"))?;
        running.ldap = Some(l.local_addr()?);
        tokio::spawn(accept(shared.clone(), l, false, stop.clone()));
    }
    if let Some(a) = &cfg.ldaps_addr {
        let l = TcpListener::bind(a).await.with_context(|| format!("cannot listen for LDAPS on {a}"))?;
        running.ldaps = Some(l.local_addr()?);
        tokio::spawn(accept(shared.clone(), l, true, stop.clone()));
    }
    Ok(running)
}

async fn accept(shared: Arc<Shared>, l: TcpListener, ldaps: bool, mut stop: tokio::sync::watch::Receiver<bool>) {
    loop {
        let (sock, peer) = tokio::select! {
            r = l.accept() => match r {
                Ok(x) => x,
                Err(e) => {
                    // Out of descriptors and the like: wait rather than spin.
                    tracing::warn!(error = %e, "LDAP accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
            _ = stop.changed() => return,
        };
        let n = shared.connections.fetch_add(1, Ordering::AcqRel);
        if n >= shared.limits.max_connections {
            shared.connections.fetch_sub(1, Ordering::AcqRel);
            metrics::counter!("cairn_ldap_connections_refused_total").increment(1);
            drop(sock);
            continue;
        }
        metrics::counter!("cairn_ldap_connections_total", "tls" => if ldaps { "ldaps" } else { "ldap" }).increment(1);
        let shared = shared.clone();
        tokio::spawn(async move {
            let _ = sock.set_nodelay(true);
            connection(shared.clone(), sock, peer, ldaps).await;
            shared.connections.fetch_sub(1, Ordering::AcqRel);
        });
    }
}

async fn connection(shared: Arc<Shared>, sock: TcpStream, peer: SocketAddr, ldaps: bool) {
    let mut session = Session::new(shared.clone(), peer, ldaps);
    if ldaps {
        let Some(acceptor) = shared.tls.clone() else { return };
        match tokio::time::timeout(shared.limits.idle_timeout, acceptor.accept(sock)).await {
            Ok(Ok(tls)) => {
                serve(&shared, &mut session, tls).await;
            }
            Ok(Err(e)) => tracing::debug!(%peer, error = %e, "LDAPS handshake failed"),
            Err(_) => tracing::debug!(%peer, "LDAPS handshake timed out"),
        }
        return;
    }
    if let Some(plain) = serve(&shared, &mut session, sock).await {
        // StartTLS: anything the client sent after the request is refused (it must wait).
        let Some(acceptor) = shared.tls.clone() else { return };
        match tokio::time::timeout(shared.limits.idle_timeout, acceptor.accept(plain)).await {
            Ok(Ok(tls)) => {
                session.tls = true;
                serve(&shared, &mut session, tls).await;
            }
            Ok(Err(e)) => tracing::debug!(%peer, error = %e, "StartTLS handshake failed"),
            Err(_) => tracing::debug!(%peer, "StartTLS handshake timed out"),
        }
    }
}

/// Serves messages until the client leaves, errs or idles; returns the stream when the
/// client asked for StartTLS (and sent nothing after it).
async fn serve<S: AsyncRead + AsyncWrite + Unpin>(shared: &Shared, session: &mut Session, io: S) -> Option<S> {
    let codec = LdapCodec::new(Some(shared.limits.max_message_bytes), None);
    let mut framed = Framed::new(io, codec);
    loop {
        let next = match tokio::time::timeout(shared.limits.idle_timeout, framed.next()).await {
            Err(_) => {
                let _ = framed
                    .send(ldap3_proto::DisconnectionNotice::gen_response(LdapResultCode::Unavailable, "idle too long"))
                    .await;
                return None;
            }
            Ok(None) => return None,
            Ok(Some(Err(e))) => {
                metrics::counter!("cairn_ldap_protocol_errors_total").increment(1);
                tracing::debug!(error = %e, "LDAP message refused; closing the connection");
                let _ = framed
                    .send(ldap3_proto::DisconnectionNotice::gen_response(
                        LdapResultCode::ProtocolError,
                        "the message could not be decoded, or is too large",
                    ))
                    .await;
                return None;
            }
            Ok(Some(Ok(m))) => m,
        };
        let (answers, after) = session.handle(next).await;
        for a in answers {
            if framed.feed(a).await.is_err() {
                return None;
            }
        }
        if framed.flush().await.is_err() {
            return None;
        }
        match after {
            After::Continue => {}
            After::Close => return None,
            After::StartTls => {
                let parts = framed.into_parts();
                if !parts.read_buf.is_empty() {
                    return None;
                }
                return Some(parts.io);
            }
        }
    }
}

/// Entry points for the fuzz target (`fuzz/`): Cairn's own handling of what the decoder
/// yields, without a network or a database.
#[doc(hidden)]
pub mod fuzzing {
    use ldap3_proto::proto::{LdapMsg, LdapOp};

    use crate::entry::{parse_dn, Base, Entry};
    use crate::model::{GroupRec, Model, UserRec};

    fn sample() -> Model {
        let now = chrono::Utc::now();
        let mut m = Model::default();
        let u = UserRec {
            id: "0123456789abcdef01234567".into(),
            uid: "Alice".into(),
            lower_uid: Some("alice".into()),
            mail: "alice@example.com".into(),
            state: cairn_domain::State::Activated,
            locked: false,
            expired: false,
            password_date: None,
            service: false,
            created: now,
            updated: now,
            cn: "Alice Example".into(),
            sn: "Example".into(),
            given_name: Some("Alice".into()),
            display_name: None,
            title: Some("Engineer".into()),
            department: Some("R&D".into()),
            employee_number: None,
            employee_type: None,
            company: None,
            location: None,
            description: None,
            manager: None,
            phones: vec!["+1 555".into()].into(),
            mobiles: Box::default(),
            uid_number: Some(5001),
            gid_number: None,
            ssh_keys: vec!["ssh-ed25519 AAAA".into()].into(),
        };
        let g = GroupRec {
            id: "0123456789abcdef01234568".into(),
            name: "ops, \"core\"".into(),
            key: "ops, \"core\"".into(),
            description: None,
            gid_number: Some(7000),
            created: now,
            updated: now,
            members: vec![u.id.clone()],
        };
        m.granted_users.insert(u.id.clone());
        m.granted_groups.insert(g.id.clone());
        m.user_groups.insert(u.id.clone(), vec![g.id.clone()]);
        m.put_user(u);
        m.groups.insert(g.id.clone(), std::sync::Arc::new(g));
        m
    }

    /// Parses every DN the message names and evaluates its filter on a sample tree.
    pub fn exercise(msg: &LdapMsg) {
        let base = Base::new("dc=cairn,dc=local").expect("base");
        let m = sample();
        match &msg.op {
            LdapOp::BindRequest(b) => {
                let _ = base.target(&b.dn);
            }
            LdapOp::CompareRequest(c) => {
                let _ = base.target(&c.dn);
                let _ = crate::entry::attr(&c.atype);
            }
            LdapOp::SearchRequest(s) => {
                let _ = base.target(&s.base);
                let _ = parse_dn(&s.base);
                let user = m.users.values().next().cloned().expect("user");
                let group = m.groups.values().next().cloned().expect("group");
                for e in [Entry::Base, Entry::Users, Entry::User(&user), Entry::Group(&group)] {
                    let _ = crate::filter::eval(&s.filter, e, &m, &base);
                }
                let _ = crate::filter::user_candidates(&s.filter, &m);
                let _ = crate::filter::group_candidates(&s.filter, &m);
            }
            _ => {}
        }
    }
}
