//! Cairn's RADIUS front end (§11, RFC 2865/2869): Access-Requests with PAP answered through
//! `Directory::authenticate`, calling only `cairn-directory`.
//!
//! ```text
//!  datagram ─▶ UDP loop (never waits) ──┬─ retransmission seen: cached reply │ dropped
//!                                       ├─ source known to no server: dropped
//!                                       ├─ more than max_pending in work: dropped
//!                                       └─ spawned ─▶ Message-Authenticator missing/wrong: dropped
//!                                                   ▶ authenticate (hashing on the bounded pool)
//!                                                   ▶ Accept │ Challenge (State) │ Reject
//! ```
//! Every answer carries the Message-Authenticator as its first attribute (Blast-RADIUS,
//! CVE-2024-3596); every refused request of a known source with a valid one gets a real
//! Access-Reject with one generic Reply-Message. Drops are counted in `/metrics`
//! (`cairn_radius_dropped_total{reason}`).

pub mod wire;

use std::collections::{HashMap, VecDeque};
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use cairn_directory::domain::access::{Protocol, Step};
use cairn_directory::domain::radius::{canonical, RadiusMfa};
use cairn_directory::domain::{Actor, Secret};
use cairn_directory::{AuthRequest, Authenticated, Credential, Ctx, Directory, Error, RadiusClient, RadiusStamp};
use radius::core::code::Code;
use radius::core::packet::Packet;
use radius::core::rfc2865;
use tokio::net::UdpSocket;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// What a refused person is told, whatever the reason (§8: nothing about the account).
pub const REJECT_MESSAGE: &str = "Access denied";
pub const CHALLENGE_MESSAGE: &str = "Enter the 6-digit code of your authenticator app";

const REPLY_MESSAGE: u8 = 18;
const STATE: u8 = 24;
const PROXY_STATE: u8 = 33;

#[derive(Debug, Clone)]
pub struct RadiusConfig {
    pub addr: String,
    pub limits: Limits,
}

#[derive(Debug, Clone)]
pub struct Limits {
    /// Requests being verified at once; past it new ones are dropped (the NAS retransmits or
    /// fails over), so a flood costs no memory.
    pub max_pending: usize,
    /// How long a reply is kept for a retransmission (RFC 5080 §2.2.2).
    pub duplicate_window: Duration,
    /// Replies kept at most (a flood of distinct requests cannot grow the cache).
    pub max_cached_replies: usize,
    /// How long an Access-Challenge's State may be answered.
    pub challenge_validity: chrono::Duration,
    /// Challenges waiting for their code at most.
    pub max_challenges: usize,
}

impl Default for Limits {
    fn default() -> Limits {
        Limits {
            max_pending: 128,
            duplicate_window: Duration::from_secs(5),
            max_cached_replies: 16_384,
            challenge_validity: chrono::Duration::seconds(60),
            max_challenges: 10_000,
        }
    }
}

fn dropped(reason: &'static str) {
    metrics::counter!("cairn_radius_dropped_total", "reason" => reason).increment(1);
}

/// A dropped request worth an administrator's eye (an unknown device, a wrong secret): logged
/// as a warning at most every ten seconds, so a flood cannot fill the log; the metric counts
/// every one.
fn warn_dropped(peer: SocketAddr, why: &str) {
    use std::sync::atomic::{AtomicU64, Ordering};
    static START: std::sync::OnceLock<Instant> = std::sync::OnceLock::new();
    static LAST: AtomicU64 = AtomicU64::new(0);
    let now = START.get_or_init(Instant::now).elapsed().as_secs() + 10;
    let last = LAST.load(Ordering::Relaxed);
    if now >= last + 10 && LAST.compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed).is_ok() {
        tracing::warn!(%peer, "RADIUS request dropped: {why} (more are counted in cairn_radius_dropped_total)");
    } else {
        tracing::debug!(%peer, "RADIUS request dropped: {why}");
    }
}

/// The servers as last read, with the stamp to tell when to read them again.
struct Table {
    stamp: RadiusStamp,
    read_at: Instant,
    clients: Vec<Arc<RadiusClient>>,
}

/// Reread at least this often, whatever the stamp says (a change another process made on
/// SQLite, which sends no notification).
const TABLE_MAX_AGE: Duration = Duration::from_secs(10);

impl Table {
    fn fresh(&self, dir: &Directory) -> bool {
        self.stamp == dir.radius_stamp() && self.read_at.elapsed() < TABLE_MAX_AGE
    }
    /// The server whose source holds `ip`, the narrowest first.
    fn find(&self, ip: IpAddr) -> Option<Arc<RadiusClient>> {
        self.clients.iter().filter(|c| c.source.contains(ip)).max_by_key(|c| c.source.prefix_len()).cloned()
    }
}

type DupKey = (SocketAddr, u8, [u8; 16]);

enum Seen {
    InWork,
    Answered(Arc<Vec<u8>>),
}

/// Replies by (source, identifier, authenticator) for a few seconds after they were sent,
/// oldest first out; a request in work stays until it is answered or dropped.
struct Replies {
    map: HashMap<DupKey, (Instant, Seen)>,
    order: VecDeque<(Instant, DupKey)>,
}

struct Challenge {
    ticket: String,
    server: String,
    user: String,
    expires: chrono::DateTime<chrono::Utc>,
}

struct Shared {
    dir: Directory,
    limits: Limits,
    sock: UdpSocket,
    table: std::sync::RwLock<Arc<Table>>,
    reload: tokio::sync::Mutex<()>,
    pending: Arc<Semaphore>,
    replies: Mutex<Replies>,
    challenges: Mutex<HashMap<[u8; 16], Challenge>>,
}

/// Binds `cfg.addr` and answers until `stop` turns true; returns the bound address.
pub async fn start(
    dir: Directory,
    cfg: RadiusConfig,
    mut stop: tokio::sync::watch::Receiver<bool>,
) -> Result<SocketAddr> {
    let sock = UdpSocket::bind(&cfg.addr).await.with_context(|| format!("cannot listen for RADIUS on {}", cfg.addr))?;
    let addr = sock.local_addr()?;
    // Another process's change of a server reaches this one's table at once (PostgreSQL).
    dir.watch_changes();
    let (stamp, clients) = dir.radius_clients().await.context("cannot read the RADIUS servers")?;
    let table = Table { stamp, read_at: Instant::now(), clients: clients.into_iter().map(Arc::new).collect() };
    let shared = Arc::new(Shared {
        pending: Arc::new(Semaphore::new(cfg.limits.max_pending)),
        limits: cfg.limits,
        dir,
        sock,
        table: std::sync::RwLock::new(Arc::new(table)),
        reload: tokio::sync::Mutex::new(()),
        replies: Mutex::new(Replies { map: HashMap::new(), order: VecDeque::new() }),
        challenges: Mutex::new(HashMap::new()),
    });
    tokio::spawn(async move {
        tokio::select! {
            _ = receive(shared) => {}
            _ = stop.changed() => {}
        }
    });
    Ok(addr)
}

/// The UDP loop: reads, sorts, hands off. It never awaits anything but the socket.
async fn receive(shared: Arc<Shared>) {
    let mut buf = vec![0u8; wire::MAX_PACKET + 1];
    loop {
        let (n, peer) = match shared.sock.recv_from(&mut buf).await {
            Ok(x) => x,
            Err(e) => {
                // ICMP port unreachable from an earlier reply and the like: keep reading.
                tracing::debug!(error = %e, "RADIUS receive failed");
                continue;
            }
        };
        metrics::counter!("cairn_radius_requests_total").increment(1);
        if !(20..=wire::MAX_PACKET).contains(&n) {
            dropped("malformed");
            continue;
        }
        let datagram = &buf[..n];
        let table = shared.table.read().expect("table").clone();
        let fresh = table.fresh(&shared.dir);
        if fresh && table.find(peer.ip()).is_none() {
            dropped("unknown_source");
            warn_dropped(peer, "no RADIUS server claims its source address");
            continue;
        }
        let key: DupKey = (peer, datagram[1], datagram[4..20].try_into().expect("16 octets"));
        match shared.seen(key) {
            Some(Seen::Answered(reply)) => {
                metrics::counter!("cairn_radius_retransmissions_total").increment(1);
                let _ = shared.sock.try_send_to(&reply, peer);
                continue;
            }
            Some(Seen::InWork) => {
                metrics::counter!("cairn_radius_retransmissions_total").increment(1);
                continue;
            }
            None => {}
        }
        let Ok(permit) = shared.pending.clone().try_acquire_owned() else {
            dropped("overload");
            continue;
        };
        if !shared.mark_in_work(key) {
            dropped("overload");
            continue;
        }
        let datagram = datagram.to_vec();
        let s = shared.clone();
        tokio::spawn(async move {
            let answer = s.handle(&datagram, peer).await;
            s.finish(key, answer, peer).await;
            drop::<OwnedSemaphorePermit>(permit);
        });
    }
}

impl Shared {
    fn seen(&self, key: DupKey) -> Option<Seen> {
        let mut r = self.replies.lock().expect("replies");
        r.expire(self.limits.duplicate_window);
        r.map.get(&key).map(|(_, s)| match s {
            Seen::InWork => Seen::InWork,
            Seen::Answered(b) => Seen::Answered(b.clone()),
        })
    }

    /// False when the cache is full of replies younger than the window.
    fn mark_in_work(&self, key: DupKey) -> bool {
        let mut r = self.replies.lock().expect("replies");
        if r.map.len() >= self.limits.max_cached_replies {
            return false;
        }
        r.map.insert(key, (Instant::now(), Seen::InWork));
        true
    }

    /// Sends the answer and keeps it for retransmissions; without one (dropped), a
    /// retransmission is looked at afresh.
    async fn finish(&self, key: DupKey, answer: Option<Vec<u8>>, peer: SocketAddr) {
        match answer {
            Some(bytes) => {
                // Cached before it is sent: a NAS retransmitting the instant the reply arrives
                // must find the reply, not a request still "in work" (which is ignored).
                let bytes = Arc::new(bytes);
                {
                    let mut r = self.replies.lock().expect("replies");
                    let now = Instant::now();
                    if let Some(s) = r.map.get_mut(&key) {
                        *s = (now, Seen::Answered(bytes.clone()));
                        r.order.push_back((now, key));
                    }
                }
                if let Err(e) = self.sock.send_to(&bytes, peer).await {
                    tracing::debug!(%peer, error = %e, "RADIUS reply not sent");
                }
            }
            None => {
                self.replies.lock().expect("replies").map.remove(&key);
            }
        }
    }

    /// The servers, read again first when they may have changed.
    async fn table(&self) -> Option<Arc<Table>> {
        let t = self.table.read().expect("table").clone();
        if t.fresh(&self.dir) {
            return Some(t);
        }
        let _one = self.reload.lock().await;
        let t = self.table.read().expect("table").clone();
        if t.fresh(&self.dir) {
            return Some(t);
        }
        match self.dir.radius_clients().await {
            Ok((stamp, clients)) => {
                let t = Arc::new(Table {
                    stamp,
                    read_at: Instant::now(),
                    clients: clients.into_iter().map(Arc::new).collect(),
                });
                *self.table.write().expect("table") = t.clone();
                Some(t)
            }
            Err(e) => {
                tracing::error!(error = %e, "cannot read the RADIUS servers");
                None
            }
        }
    }

    /// One request, start to end: `None` when it is dropped.
    async fn handle(&self, datagram: &[u8], peer: SocketAddr) -> Option<Vec<u8>> {
        let client = self.table().await?.find(peer.ip());
        let Some(client) = client else {
            dropped("unknown_source");
            warn_dropped(peer, "no RADIUS server claims its source address");
            return None;
        };
        if datagram[0] != Code::AccessRequest as u8 {
            dropped("unsupported_code");
            return None;
        }
        let secret = client.secret.expose().as_bytes();
        if let Err(p) = wire::verify_request(datagram, secret) {
            let (reason, why) = match p {
                wire::MaProblem::Missing => ("message_authenticator_missing", "no Message-Authenticator"),
                wire::MaProblem::Malformed => ("malformed", "malformed attributes"),
                wire::MaProblem::Wrong => {
                    ("message_authenticator_wrong", "wrong Message-Authenticator (a wrong shared secret?)")
                }
            };
            dropped(reason);
            warn_dropped(peer, why);
            return None;
        }
        let Ok(req) = Packet::decode(datagram, secret) else {
            dropped("malformed");
            return None;
        };
        // From here on the request is authentic: every refusal is a real Access-Reject.
        let proxy: Vec<(u8, Vec<u8>)> =
            rfc2865::lookup_all_proxy_state(&req).into_iter().map(|v| (PROXY_STATE, v)).collect();
        let answer = match self.decide(&req, &client, peer).await {
            Ok(a) => a,
            Err(e) => {
                // The directory is not answering (its database): silence lets the NAS fail
                // over, where a reject would shut the person out.
                tracing::error!(error = %e, "RADIUS request not answered");
                dropped("internal_error");
                return None;
            }
        };
        let (code, mut attrs, outcome) = match answer {
            Answer::Accept => (Code::AccessAccept, vec![], "accept"),
            Answer::Reject => (Code::AccessReject, vec![(REPLY_MESSAGE, REJECT_MESSAGE.as_bytes().to_vec())], "reject"),
            Answer::Challenge(state) => (
                Code::AccessChallenge,
                vec![(REPLY_MESSAGE, CHALLENGE_MESSAGE.as_bytes().to_vec()), (STATE, state.to_vec())],
                "challenge",
            ),
        };
        attrs.extend(proxy);
        metrics::counter!("cairn_radius_responses_total", "code" => outcome).increment(1);
        match wire::reply(&req, code, &attrs) {
            Ok(b) => Some(b),
            Err(e) => {
                tracing::error!(error = %e, "RADIUS reply not encoded");
                None
            }
        }
    }

    async fn decide(&self, req: &Packet, client: &RadiusClient, peer: SocketAddr) -> Result<Answer, Error> {
        let user = rfc2865::lookup_user_name(req).and_then(Result::ok);
        let password = rfc2865::lookup_user_password(req).and_then(Result::ok);
        let (Some(user), Some(password)) = (user, password) else {
            // CHAP, EAP, a missing name: not something Cairn verifies.
            tracing::debug!(%peer, "RADIUS request without User-Name and PAP User-Password rejected");
            return Ok(Answer::Reject);
        };
        if !client.user_password_enabled {
            return Ok(Answer::Reject);
        }
        let Ok(password) = String::from_utf8(password) else { return Ok(Answer::Reject) };
        let nas = rfc2865::lookup_nas_identifier(req).and_then(Result::ok);
        let ctx = Ctx::new(
            Actor { kind: "user".into(), id: None, name: None },
            "radius",
            Some(canonical(peer.ip()).to_string()),
        );
        let state = rfc2865::lookup_state(req);
        let resource = Some(client.resource());
        let secret;
        let credential = match &state {
            Some(s) => {
                // One use: taken out whatever the code turns out to be.
                let c = <[u8; 16]>::try_from(s.as_slice())
                    .ok()
                    .and_then(|k| self.challenges.lock().expect("challenges").remove(&k));
                match c {
                    Some(c) if c.expires > self.dir.now() && c.server == client.id && c.user == user => {
                        let ticket = c.ticket;
                        return self
                            .conclude(
                                &ctx,
                                client,
                                &user,
                                nas,
                                resource,
                                Credential::SecondFactor { ticket: &ticket, code: &password },
                            )
                            .await;
                    }
                    _ => return Ok(Answer::Reject),
                }
            }
            None => {
                // `password,123456`: the code appended, where the server asks for codes.
                let (pw, code) = match password.rsplit_once(',') {
                    Some((pw, code))
                        if client.mfa != RadiusMfa::Disabled
                            && code.len() == 6
                            && code.bytes().all(|b| b.is_ascii_digit()) =>
                    {
                        (pw.to_string(), Some(code.to_string()))
                    }
                    _ => (password, None),
                };
                secret = (Secret::new(pw), code);
                Credential::Password { login: &user, password: &secret.0, code: secret.1.as_deref() }
            }
        };
        self.conclude(&ctx, client, &user, nas, resource, credential).await
    }

    async fn conclude(
        &self,
        ctx: &Ctx,
        client: &RadiusClient,
        user: &str,
        nas: Option<String>,
        resource: Option<cairn_directory::domain::graph::ResourceRef>,
        credential: Credential<'_>,
    ) -> Result<Answer, Error> {
        // The NAS speaks for many people from one address: no per-address throttle (the
        // lockout protects each account); the address is the event's.
        let req = AuthRequest { protocol: Protocol::Radius, credential, resource, client_addr: None, device: nas };
        match self.dir.authenticate(ctx, req).await {
            Ok(Authenticated::Granted(_)) => Ok(Answer::Accept),
            Ok(Authenticated::Step { step: Step::SecondFactor, ticket, .. }) => {
                let state: [u8; 16] = rand::random();
                let mut ch = self.challenges.lock().expect("challenges");
                let now = self.dir.now();
                ch.retain(|_, c| c.expires > now);
                if ch.len() >= self.limits.max_challenges {
                    return Ok(Answer::Reject);
                }
                ch.insert(
                    state,
                    Challenge {
                        ticket,
                        server: client.id.clone(),
                        user: user.to_string(),
                        expires: now + self.limits.challenge_validity,
                    },
                );
                Ok(Answer::Challenge(state))
            }
            // Enrolment and password changes happen on the portal, not on a Wi-Fi prompt.
            Ok(Authenticated::Step { .. }) => Ok(Answer::Reject),
            Err(Error::Refused(_)) => Ok(Answer::Reject),
            Err(e) => Err(e),
        }
    }
}

impl Replies {
    fn expire(&mut self, window: Duration) {
        while let Some((at, key)) = self.order.front().copied() {
            if at.elapsed() < window {
                break;
            }
            self.order.pop_front();
            // Only the reply this entry was queued for (the same request may have been
            // answered again since).
            if self.map.get(&key).is_some_and(|(t, s)| *t == at && matches!(s, Seen::Answered(_))) {
                self.map.remove(&key);
            }
        }
    }
}

enum Answer {
    Accept,
    Reject,
    Challenge([u8; 16]),
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replies_expire_after_their_answer_and_requests_in_work_stay() {
        let mut r = Replies { map: HashMap::new(), order: VecDeque::new() };
        let key = |id: u8| -> DupKey { ("192.0.2.1:5000".parse().unwrap(), id, [id; 16]) };
        let old = Instant::now();
        r.map.insert(key(1), (old, Seen::InWork));
        r.map.insert(key(2), (old, Seen::Answered(Arc::new(vec![2]))));
        r.order.push_back((old, key(2)));
        // Answered again later: the earlier queue entry must not remove the newer reply.
        let newer = old + Duration::from_millis(1);
        r.map.insert(key(3), (newer, Seen::Answered(Arc::new(vec![3]))));
        r.order.push_back((old, key(3)));
        r.order.push_back((newer, key(3)));
        r.expire(Duration::from_secs(3600));
        assert_eq!(r.map.len(), 3, "nothing is old yet");
        r.expire(Duration::ZERO);
        assert!(r.map.contains_key(&key(1)), "a request in work stays however long it takes");
        assert!(!r.map.contains_key(&key(2)) && !r.map.contains_key(&key(3)));
        assert!(r.order.is_empty());
    }
}
