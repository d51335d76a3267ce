//! RADIUS end to end (§11, issue 16): the real binary on both databases, asked by a NAS
//! written with the `radius` crate (cairn_radius::wire's client side, checking every reply's
//! Response Authenticator and Message-Authenticator) and by FreeRADIUS's own `radclient` and
//! `radtest`: who gets in, who is refused with a real Access-Reject, what is dropped unanswered,
//! TOTP by challenge and appended, lockout shared with the portal, retransmissions, and the
//! JumpCloud-shaped `/api/radiusservers`.

mod common;

use std::net::{SocketAddr, UdpSocket};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use cairn_radius::wire::{read_reply, Code, Reply, Request};
use common::{Browser, Db, Server};
use serde_json::{json, Value};

const PW: &str = "lantern orchard seventeen";
const SECRET: &str = "wifi-shared-secret-0123456789";
/// How long a request that must be dropped is given to be answered anyway.
const SILENCE: Duration = Duration::from_millis(1500);

fn free_udp_port() -> u16 {
    UdpSocket::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

struct Radius {
    s: Server,
    addr: SocketAddr,
    clock: PathBuf,
    _clock_dir: tempfile::TempDir,
}

fn start(db: &Db) -> Radius {
    let port = free_udp_port();
    let clock_dir = tempfile::tempdir().unwrap();
    let clock = clock_dir.path().join("clock");
    std::fs::write(&clock, "0").unwrap();
    let s = Server::start_with(
        db,
        &[
            ("CAIRN_BOOTSTRAP_API_KEY", common::KEY),
            ("CAIRN_RADIUS_ADDR", &format!("127.0.0.1:{port}")),
            ("CAIRN_TEST_CLOCK_FILE", clock.to_str().unwrap()),
        ],
    );
    Radius { s, addr: format!("127.0.0.1:{port}").parse().unwrap(), clock, _clock_dir: clock_dir }
}

impl Radius {
    /// Moves the server's clock `secs` seconds ahead of the wall clock.
    fn set_clock(&self, secs: i64) {
        std::fs::write(&self.clock, secs.to_string()).unwrap();
    }
    fn nas(&self, from: &str, secret: &str) -> Nas {
        let sock = UdpSocket::bind(format!("{from}:0")).unwrap();
        Nas { sock, to: self.addr, secret: secret.as_bytes().to_vec(), id: 0 }
    }
    fn metric(&self, name: &str) -> f64 {
        let text = self.s.raw().get(format!("{}/metrics", self.s.base)).send().unwrap().text().unwrap();
        text.lines().filter(|l| l.starts_with(name)).filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok()).sum()
    }
    /// Waits until a counter reaches `n` (drops are counted as they happen, in another task).
    fn wait_metric(&self, name: &str, n: f64) {
        let start = Instant::now();
        while self.metric(name) < n {
            assert!(start.elapsed() < Duration::from_secs(20), "{name} stayed below {n}: {}", self.metric(name));
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

/// A NAS: a UDP socket, its shared secret, its next identifier.
struct Nas {
    sock: UdpSocket,
    to: SocketAddr,
    secret: Vec<u8>,
    id: u8,
}

impl Nas {
    fn request(&mut self, user: &str, password: &str, state: Option<&[u8]>, ma: bool) -> (Vec<u8>, Vec<u8>) {
        self.id = self.id.wrapping_add(1);
        Request {
            id: self.id,
            secret: &self.secret,
            user,
            password: password.as_bytes(),
            state,
            nas_identifier: Some("ap-lobby"),
            message_authenticator: ma,
        }
        .encode()
    }

    /// Sends the datagram; the reply's bytes, or `None` after `wait` of silence.
    fn send(&self, bytes: &[u8], wait: Duration) -> Option<Vec<u8>> {
        self.sock.send_to(bytes, self.to).unwrap();
        self.sock.set_read_timeout(Some(wait)).unwrap();
        let mut buf = [0u8; 4096];
        loop {
            match self.sock.recv_from(&mut buf) {
                // A late reply to an earlier request is not this one's.
                Ok(_) if buf[1] != bytes[1] => continue,
                Ok((n, _)) => return Some(buf[..n].to_vec()),
                Err(_) => return None,
            }
        }
    }

    /// An Access-Request with a Message-Authenticator, and the verified reply.
    fn ask(&mut self, user: &str, password: &str, state: Option<&[u8]>) -> Reply {
        let (bytes, _) = self.request(user, password, state, true);
        let reply = self.send(&bytes, Duration::from_secs(30)).expect("an answer");
        let r = read_reply(&reply, &bytes, &self.secret).expect("a well-signed reply");
        assert!(r.message_authenticator_first, "Message-Authenticator first (Blast-RADIUS)");
        r
    }

    fn code(&mut self, user: &str, password: &str) -> Code {
        self.ask(user, password, None).code
    }
}

fn create(s: &Server, body: Value) -> String {
    let (st, v) = s.post("/api/systemusers", body);
    assert_eq!(st, 200, "{v}");
    v["_id"].as_str().unwrap().to_string()
}

fn user(s: &Server, name: &str, extra: Value) -> String {
    let mut b = json!({"username": name, "email": format!("{name}@example.com"), "password": PW});
    for (k, v) in extra.as_object().unwrap() {
        b[k] = v.clone();
    }
    create(s, b)
}

fn group(s: &Server, name: &str, members: &[&str]) -> String {
    let (st, v) = s.post("/api/v2/usergroups", json!({"name": name}));
    assert!(st == 201 || st == 200, "{v}");
    let gid = v["id"].as_str().unwrap().to_string();
    for m in members {
        let (st, v) =
            s.post(&format!("/api/v2/usergroups/{gid}/members"), json!({"op": "add", "type": "user", "id": m}));
        assert!(st == 204 || st == 200, "{st} {v}");
    }
    gid
}

fn radius_server(s: &Server, name: &str, source: &str, secret: &str, extra: Value) -> String {
    let mut b = json!({"name": name, "networkSourceIp": source, "sharedSecret": secret});
    for (k, v) in extra.as_object().unwrap() {
        b[k] = v.clone();
    }
    let (st, v) = s.post("/api/radiusservers", b);
    assert_eq!(st, 200, "{v}");
    v["_id"].as_str().unwrap().to_string()
}

fn associate(s: &Server, server: &str, kind: &str, id: &str) {
    let (st, v) =
        s.post(&format!("/api/v2/radiusservers/{server}/associations"), json!({"op": "add", "type": kind, "id": id}));
    assert_eq!(st, 204, "{v}");
}

fn events(s: &Server, query: &str) -> Vec<Value> {
    let (st, v) = s.get(&format!("/api/v2/events?{query}&limit=1000"));
    assert_eq!(st, 200, "{v}");
    v.as_array().cloned().unwrap_or_else(|| v["results"].as_array().cloned().unwrap_or_default())
}

fn radius_events(s: &Server) -> Vec<Value> {
    let mut all = events(s, "action=login_success");
    all.extend(events(s, "action=login_failure"));
    all.retain(|e| e["detail"]["protocol"] == "radius");
    all
}

/// FreeRADIUS's client, when installed (CI installs freeradius-utils; CAIRN_REQUIRE_ALL makes
/// its absence a failure).
fn have(tool: &str) -> bool {
    let ok = Command::new(tool).arg("-h").stdout(Stdio::null()).stderr(Stdio::null()).status().is_ok();
    if !ok {
        assert!(
            std::env::var("CAIRN_REQUIRE_ALL").is_err(),
            "{tool} is required (CAIRN_REQUIRE_ALL): freeradius-utils"
        );
        eprintln!("{tool} not installed: skipping its part");
    }
    ok
}

/// `radclient` with the attributes on its standard input; its output.
fn radclient(addr: SocketAddr, secret: &str, attrs: &str) -> (bool, String) {
    radclient_waiting(addr, secret, attrs, 30)
}

/// `radclient`, one try of `wait` seconds.
fn radclient_waiting(addr: SocketAddr, secret: &str, attrs: &str, wait: u32) -> (bool, String) {
    use std::io::Write;
    let mut c = Command::new("radclient")
        .args(["-x", "-r", "1", "-t", &wait.to_string(), &addr.to_string(), "auth", secret])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    c.stdin.take().unwrap().write_all(attrs.as_bytes()).unwrap();
    let out = c.wait_with_output().unwrap();
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    (out.status.success(), text)
}

/// `radtest` (PAP, with a Message-Authenticator); whether it was accepted, and its output.
fn radtest(addr: SocketAddr, secret: &str, user: &str, pw: &str) -> (bool, String) {
    let out = Command::new("radtest").args(["-t", "pap", user, pw, &addr.to_string(), "0", secret]).output().unwrap();
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    (out.status.success(), text)
}

/// The lifecycle, the password and the grants decide; every refusal of an authentic request is
/// a real Access-Reject with one generic message, and suspension closes the door at the next
/// request.
#[test]
fn associated_active_users_get_in_and_everyone_else_gets_a_reject() {
    for db in Db::all("radius_decisions") {
        let r = start(&db);
        let s = &r.s;
        let wifi = radius_server(s, "Office Wi-Fi", "127.0.0.1", SECRET, json!({}));
        let ada = user(s, "ada", json!({}));
        let bob = user(s, "bob", json!({}));
        let _staged = user(s, "sid", json!({"state": "STAGED"}));
        let sue = user(s, "sue", json!({}));
        let eve = user(s, "eve", json!({}));
        let _outsider = user(s, "oscar", json!({}));
        let staff = group(s, "staff", &[&ada, &bob, &sue, &eve]);
        associate(s, &wifi, "user_group", &staff);
        let mut nas = r.nas("127.0.0.1", SECRET);

        let ok = nas.ask("ada", PW, None);
        assert_eq!(ok.code, Code::AccessAccept, "{ok:?}");
        assert_eq!(nas.code("ADA@example.com", PW), Code::AccessAccept, "by e-mail, in any case");

        let (st, _) = s.put(&format!("/api/systemusers/{sue}"), json!({"state": "SUSPENDED"}));
        assert_eq!(st, 200);
        let (st, _) = s.post(&format!("/api/systemusers/{eve}/expire"), json!({}));
        assert_eq!(st, 200);
        for (who, pw) in [
            ("ada", "not the password"),
            ("ada", ""),
            ("sid", PW),
            ("sue", PW),
            ("eve", PW),
            ("oscar", PW),
            ("nobody", PW),
        ] {
            let rep = nas.ask(who, pw, None);
            assert_eq!(rep.code, Code::AccessReject, "{who}");
            assert_eq!(
                rep.reply_message.as_deref(),
                Some("Access denied"),
                "{who}: the same words whatever the reason"
            );
        }

        // Suspension closes the door at the next request; reactivation opens it again.
        assert_eq!(nas.code("bob", PW), Code::AccessAccept);
        let (st, _) = s.put(&format!("/api/systemusers/{bob}"), json!({"state": "SUSPENDED"}));
        assert_eq!(st, 200);
        assert_eq!(nas.code("bob", PW), Code::AccessReject);
        let (st, _) = s.put(&format!("/api/systemusers/{bob}"), json!({"state": "ACTIVATED"}));
        assert_eq!(st, 200);
        assert_eq!(nas.code("bob", PW), Code::AccessAccept);
        // Leaving the group, or the group leaving the server, ends the grant at once.
        let (st, _) =
            s.post(&format!("/api/v2/usergroups/{staff}/members"), json!({"op": "remove", "type": "user", "id": bob}));
        assert_eq!(st, 204);
        assert_eq!(nas.code("bob", PW), Code::AccessReject);

        // Expired passwords: refused under REMOVE (the default), let in under MAINTAIN.
        let (st, v) = s.put(&format!("/api/radiusservers/{wifi}"), json!({"userPasswordExpirationAction": "MAINTAIN"}));
        assert_eq!(st, 200, "{v}");
        assert_eq!(v["userPasswordExpirationAction"], "MAINTAIN");
        assert_eq!(nas.code("eve", PW), Code::AccessAccept);
        assert_eq!(nas.code("eve", "not the password"), Code::AccessReject);

        // Every attempt is one event naming the protocol, the server, the NAS and its address.
        let ev = radius_events(s);
        assert!(
            ev.iter().any(|e| e["outcome"] == "success"
                && e["detail"]["resource"]["id"] == wifi.as_str()
                && e["detail"]["device"] == "ap-lobby"
                && e["client_addr"] == "127.0.0.1"
                && e["source"] == "radius"),
            "{ev:?}"
        );
        assert!(ev.iter().any(|e| e["outcome"] == "failure" && e["detail"]["reason"] == "the account is not active"));

        // FreeRADIUS's radtest and radclient (with a Message-Authenticator, as a NAS hardened
        // against Blast-RADIUS sends) get the same.
        if have("radtest") {
            let (ok, out) = radtest(r.addr, SECRET, "ada", PW);
            assert!(ok && out.contains("Received Access-Accept"), "{out}");
            let (ok, out) = radtest(r.addr, SECRET, "sue", PW);
            assert!(!ok && out.contains("Received Access-Reject"), "{out}");
        }
        if have("radclient") {
            let ma = "Message-Authenticator = 0x00";
            let (ok, out) =
                radclient(r.addr, SECRET, &format!("User-Name = \"ada\"\nUser-Password = \"{PW}\"\n{ma}\n"));
            assert!(ok && out.contains("Received Access-Accept"), "{out}");
            let (ok, out) =
                radclient(r.addr, SECRET, &format!("User-Name = \"oscar\"\nUser-Password = \"{PW}\"\n{ma}\n"));
            assert!(!ok && out.contains("Received Access-Reject") && out.contains("Access denied"), "{out}");
        }
    }
}

/// Unknown sources, wrong secrets and missing or wrong Message-Authenticators get no answer
/// and are counted; nothing is verified for them and no event is written.
#[test]
fn unauthentic_requests_are_dropped_and_counted() {
    for db in Db::all("radius_drops") {
        let r = start(&db);
        let s = &r.s;
        let wifi = radius_server(s, "Office Wi-Fi", "127.0.0.1", SECRET, json!({}));
        let ada = user(s, "ada", json!({}));
        associate(s, &wifi, "user", &ada);
        let before = radius_events(s).len();

        // An unknown source (127.0.0.2 is this host too, but no server claims it).
        let mut stranger = r.nas("127.0.0.2", SECRET);
        let (b, _) = stranger.request("ada", PW, None, true);
        assert_eq!(stranger.send(&b, SILENCE), None);
        r.wait_metric("cairn_radius_dropped_total{reason=\"unknown_source\"}", 1.0);

        // The right source with a wrong secret: its Message-Authenticator cannot match.
        let mut wrong = r.nas("127.0.0.1", "not-the-shared-secret-at-all");
        let (b, _) = wrong.request("ada", PW, None, true);
        assert_eq!(wrong.send(&b, SILENCE), None);
        r.wait_metric("cairn_radius_dropped_total{reason=\"message_authenticator_wrong\"}", 1.0);

        // No Message-Authenticator (an old NAS, or a Blast-RADIUS forgery).
        let mut nas = r.nas("127.0.0.1", SECRET);
        let (b, _) = nas.request("ada", PW, None, false);
        assert_eq!(nas.send(&b, SILENCE), None);
        r.wait_metric("cairn_radius_dropped_total{reason=\"message_authenticator_missing\"}", 1.0);

        // A Message-Authenticator altered in one bit, and a packet altered after signing.
        let (mut b, _) = nas.request("ada", PW, None, true);
        b[25] ^= 1;
        assert_eq!(nas.send(&b, SILENCE), None);
        let (mut b, _) = nas.request("ada", PW, None, true);
        let last = b.len() - 1;
        b[last] ^= 1;
        assert_eq!(nas.send(&b, SILENCE), None);
        r.wait_metric("cairn_radius_dropped_total{reason=\"message_authenticator_wrong\"}", 3.0);

        // Garbage, a header claiming more than it has, a datagram past 4096 bytes.
        for junk in [vec![1u8; 3], vec![1, 9, 0x10, 0, 1, 2, 3], vec![1u8; 5000]] {
            assert_eq!(nas.send(&junk, SILENCE), None);
        }
        r.wait_metric("cairn_radius_dropped_total{reason=\"malformed\"}", 3.0);
        assert_eq!(radius_events(s).len(), before, "nothing verified, nothing recorded");

        // Still answering the real NAS.
        assert_eq!(nas.code("ada", PW), Code::AccessAccept);

        // radclient with a wrong secret hears nothing, nor without a Message-Authenticator.
        if have("radclient") {
            let attrs = format!("User-Name = \"ada\"\nUser-Password = \"{PW}\"\n");
            let (ok, out) = radclient_waiting(
                r.addr,
                "not-the-shared-secret-at-all",
                &format!("{attrs}Message-Authenticator = 0x00\n"),
                2,
            );
            assert!(!ok && !out.contains("Received Access-"), "{out}");
            let (ok, out) = radclient_waiting(r.addr, SECRET, &attrs, 2);
            assert!(!ok && !out.contains("Received Access-"), "{out}");
        }
    }
}

/// TOTP where the server asks for it: by Access-Challenge (State one use, short-lived) and
/// appended to the password; a code works once; both through the portal's rules.
#[test]
fn totp_by_challenge_and_appended() {
    for db in Db::all("radius_totp") {
        let r = start(&db);
        let s = &r.s;
        let vpn = radius_server(s, "VPN", "127.0.0.1", SECRET, json!({"mfa": "REQUIRED"}));
        let tess = user(s, "tess", json!({}));
        let noah = user(s, "noah", json!({}));
        associate(s, &vpn, "user", &tess);
        associate(s, &vpn, "user", &noah);
        let secret = enroll(s, &tess);
        let code_at =
            |offset: i64| cairn_directory::totp_code(&secret, chrono::Utc::now() + chrono::Duration::seconds(offset));
        let mut nas = r.nas("127.0.0.1", SECRET);

        // REQUIRED: a user without an authenticator cannot get in on a password alone.
        assert_eq!(nas.code("noah", PW), Code::AccessReject);

        // By challenge.
        r.set_clock(120);
        let ch = nas.ask("tess", PW, None);
        assert_eq!(ch.code, Code::AccessChallenge, "{ch:?}");
        assert!(ch.reply_message.unwrap().contains("code"));
        let state = ch.state.expect("a State");
        assert_eq!(nas.ask("tess", "000000", Some(&state)).code, Code::AccessReject, "a wrong code");
        assert_eq!(nas.ask("tess", &code_at(120), Some(&state)).code, Code::AccessReject, "the State is used up");
        let state = nas.ask("tess", PW, None).state.unwrap();
        assert_eq!(nas.ask("tess", &code_at(120), Some(&state)).code, Code::AccessAccept);
        let state = nas.ask("tess", PW, None).state.unwrap();
        assert_eq!(nas.ask("tess", &code_at(120), Some(&state)).code, Code::AccessReject, "a code works once");
        // Another user's name with this State opens nothing.
        let state = nas.ask("tess", PW, None).state.unwrap();
        assert_eq!(nas.ask("noah", &code_at(120), Some(&state)).code, Code::AccessReject);

        // A State answered after its minute is over.
        r.set_clock(240);
        let state = nas.ask("tess", PW, None).state.unwrap();
        r.set_clock(330);
        assert_eq!(nas.ask("tess", &code_at(330), Some(&state)).code, Code::AccessReject, "the State expired");

        // Appended: `password,123456`.
        r.set_clock(450);
        assert_eq!(nas.code("tess", &format!("{PW},{}", code_at(450))), Code::AccessAccept);
        assert_eq!(nas.code("tess", &format!("{PW},{}", code_at(450))), Code::AccessReject, "a code works once");
        r.set_clock(570);
        assert_eq!(nas.code("tess", &format!("not the password,{}", code_at(570))), Code::AccessReject);

        // DISABLED: the password alone; ENABLED: a code of those enrolled only.
        let (st, _) = s.put(&format!("/api/radiusservers/{vpn}"), json!({"mfa": "DISABLED"}));
        assert_eq!(st, 200);
        assert_eq!(nas.code("tess", PW), Code::AccessAccept);
        let (st, _) = s.put(&format!("/api/radiusservers/{vpn}"), json!({"mfa": "ENABLED"}));
        assert_eq!(st, 200);
        assert_eq!(nas.code("noah", PW), Code::AccessAccept);
        assert_eq!(nas.code("tess", PW), Code::AccessChallenge);

        // radclient answering the challenge: the State sent back with the code.
        if have("radclient") {
            r.set_clock(690);
            let ma = "Message-Authenticator = 0x00";
            let (_, out) =
                radclient(r.addr, SECRET, &format!("User-Name = \"tess\"\nUser-Password = \"{PW}\"\n{ma}\n"));
            assert!(out.contains("Received Access-Challenge"), "{out}");
            let state = out.lines().find_map(|l| l.trim().strip_prefix("State = ")).expect("a State").to_string();
            let (ok, out) = radclient(
                r.addr,
                SECRET,
                &format!("User-Name = \"tess\"\nUser-Password = \"{}\"\nState = {state}\n{ma}\n", code_at(690)),
            );
            assert!(ok && out.contains("Received Access-Accept"), "{out}");
        }
    }
}

/// Enrols a TOTP authenticator for `id` through the portal (MFA required of the user, then
/// the enrolment page); the secret.
fn enroll(s: &Server, id: &str) -> Vec<u8> {
    let (_, r) =
        s.post("/api/v2/users/actions", json!({"action": "set_mfa_required", "required": true, "user_ids": [id]}));
    assert_eq!(r["results"][0]["outcome"], "done", "{r}");
    let (_, u) = s.get(&format!("/api/systemusers/{id}"));
    let mut b = Browser::new(&s.base);
    let (at, p) = b.login(u["username"].as_str().unwrap(), PW);
    assert_eq!(at, "/portal/enroll");
    let marker = "<code class=\"secret\">";
    let start = p.body.find(marker).unwrap() + marker.len();
    let b32 = &p.body[start..start + p.body[start..].find('<').unwrap()];
    let secret = totp_rs::Secret::Encoded(b32.to_string()).to_bytes().unwrap();
    // An earlier step's code, so the steps the test uses later are all unused.
    let code = cairn_directory::totp_code(&secret, chrono::Utc::now() - chrono::Duration::seconds(30));
    let p = b.post("/portal/enroll", &[("code", &code)]);
    assert_eq!(b.follow(p).0, "/portal/profile");
    // Enrolled, no longer required by the user's own setting: the server's `mfa` decides.
    let (_, r) =
        s.post("/api/v2/users/actions", json!({"action": "set_mfa_required", "required": false, "user_ids": [id]}));
    assert_eq!(r["results"][0]["outcome"], "done", "{r}");
    secret
}

/// Failures count toward one lockout whatever the protocol; a locked account is refused
/// under REMOVE and let in with the right password under MAINTAIN; a retransmission is
/// answered from the cache and counted once.
#[test]
fn lockout_is_shared_with_the_portal_and_retransmissions_count_once() {
    for db in Db::all("radius_lockout") {
        let r = start(&db);
        let s = &r.s;
        let (st, _) = s.put("/api/organizations", json!({"settings": {"passwordPolicy": {"maxLoginAttempts": 3}}}));
        assert_eq!(st, 200);
        let wifi = radius_server(s, "Office Wi-Fi", "127.0.0.1", SECRET, json!({}));
        let lou = user(s, "lou", json!({}));
        associate(s, &wifi, "user", &lou);
        let mut nas = r.nas("127.0.0.1", SECRET);

        // One wrong password sent three times (the NAS retransmitting): one failure.
        let (bytes, _) = nas.request("lou", "not the password", None, true);
        let first = nas.send(&bytes, Duration::from_secs(30)).expect("an answer");
        for _ in 0..2 {
            assert_eq!(
                nas.send(&bytes, Duration::from_secs(30)).as_ref(),
                Some(&first),
                "the same reply, from the cache"
            );
        }
        assert_eq!(read_reply(&first, &bytes, SECRET.as_bytes()).unwrap().code, Code::AccessReject);
        let (_, u) = s.get(&format!("/api/systemusers/{lou}"));
        assert_eq!(u["badLoginAttempts"], 1, "{u}");
        assert_eq!(radius_events(s).len(), 1);
        r.wait_metric("cairn_radius_retransmissions_total", 2.0);

        // A second RADIUS failure and one on the portal lock the account for both.
        assert_eq!(nas.code("lou", "still not it"), Code::AccessReject);
        let mut b = Browser::new(&s.base);
        assert_ne!(b.login("lou", "wrong on the portal").0, "/portal/profile");
        let (_, u) = s.get(&format!("/api/systemusers/{lou}"));
        assert_eq!(u["account_locked"], true, "{u}");
        assert_eq!(nas.code("lou", PW), Code::AccessReject, "locked: the right password is refused");
        assert_ne!(Browser::new(&s.base).login("lou", PW).0, "/portal/profile");

        // MAINTAIN: the right password gets in, the lock stays for everything else.
        let (st, _) = s.put(&format!("/api/radiusservers/{wifi}"), json!({"userLockoutAction": "MAINTAIN"}));
        assert_eq!(st, 200);
        assert_eq!(nas.code("lou", PW), Code::AccessAccept);
        assert_eq!(nas.code("lou", "not the password"), Code::AccessReject);
        let (_, u) = s.get(&format!("/api/systemusers/{lou}"));
        assert_eq!(u["account_locked"], true, "{u}");
        assert_ne!(Browser::new(&s.base).login("lou", PW).0, "/portal/profile");

        // Unlocked by the admin, in again under REMOVE.
        let (st, _) = s.put(&format!("/api/radiusservers/{wifi}"), json!({"userLockoutAction": "REMOVE"}));
        assert_eq!(st, 200);
        let (st, _) = s.post(&format!("/api/systemusers/{lou}/unlock"), json!({}));
        assert_eq!(st, 200);
        assert_eq!(nas.code("lou", PW), Code::AccessAccept);
    }
}

/// The resource in JumpCloud's shape: CRUD, the secret never read back, overlaps refused,
/// bad input named, associations per server, read-only keys change nothing.
#[test]
fn radius_servers_in_jumpclouds_shape() {
    for db in Db::all("radius_api") {
        let r = start(&db);
        let s = &r.s;
        let (st, v) = s.post(
            "/api/radiusservers",
            json!({"name": "Office Wi-Fi", "networkSourceIp": "127.0.0.1", "sharedSecret": SECRET,
                   "userLockoutAction": "REMOVE", "userPasswordExpirationAction": "MAINTAIN", "mfa": "ENABLED",
                   "authIdp": "JUMPCLOUD"}),
        );
        assert_eq!(st, 200, "{v}");
        assert_eq!(v["sharedSecret"], SECRET, "POST answers radiusserver, with the secret sent");
        let wifi = v["_id"].as_str().unwrap().to_string();
        let (st, v) = s.get("/api/radiusservers");
        assert_eq!(st, 200);
        assert_eq!(v["totalCount"], 1);
        assert_eq!(v["results"][0]["name"], "Office Wi-Fi");
        assert_eq!(v["results"][0]["mfa"], "ENABLED");
        assert_eq!(v["results"][0]["userPasswordExpirationAction"], "MAINTAIN");
        assert!(!v.to_string().contains(SECRET), "lists never carry the secret");
        let (_, one) = s.get(&format!("/api/radiusservers/{wifi}"));
        assert!(!one.to_string().contains(SECRET) && one.get("sharedSecret").is_none());
        for f in ["cairn.db", "cairn.db-wal"] {
            let raw = std::fs::read(s.data_dir().join(f)).unwrap_or_default();
            assert!(!String::from_utf8_lossy(&raw).contains(SECRET), "stored sealed");
        }

        // Overlaps refused, with the other server named; a range elsewhere is fine.
        for src in ["127.0.0.1", "127.0.0.0/8", "0.0.0.0/0", "::ffff:127.0.0.1"] {
            let (st, v) =
                s.post("/api/radiusservers", json!({"name": "B", "networkSourceIp": src, "sharedSecret": SECRET}));
            assert_eq!(st, 409, "{src}: {v}");
            assert!(v["message"].as_str().unwrap().contains("Office Wi-Fi"), "{v}");
        }
        let vpn = radius_server(s, "VPN", "10.8.0.0/16", "another-secret-0123456789", json!({}));
        let (st, v) = s.put(&format!("/api/radiusservers/{vpn}"), json!({"networkSourceIp": "127.0.0.1"}));
        assert_eq!(st, 409, "{v}");

        // Bad input: every problem named, nothing written.
        for (body, field) in [
            (json!({"networkSourceIp": "10.9.0.0/16", "sharedSecret": SECRET}), "name"),
            (json!({"name": "x", "networkSourceIp": "10.9.0.1/16", "sharedSecret": SECRET}), "networkSourceIp"),
            (json!({"name": "x", "networkSourceIp": "wifi.example.com", "sharedSecret": SECRET}), "networkSourceIp"),
            (json!({"name": "x", "networkSourceIp": "10.9.0.0/16", "sharedSecret": "short"}), "sharedSecret"),
            (json!({"name": "x", "networkSourceIp": "10.9.0.0/16", "sharedSecret": "x".repeat(200)}), "sharedSecret"),
            (
                json!({"name": "x", "networkSourceIp": "10.9.0.0/16", "sharedSecret": "0123456789abcdef\u{0}"}),
                "sharedSecret",
            ),
            (json!({"name": "x", "networkSourceIp": "10.9.0.0/16", "sharedSecret": SECRET, "mfa": "SOMETIMES"}), "mfa"),
            (
                json!({"name": "x", "networkSourceIp": "10.9.0.0/16", "sharedSecret": SECRET, "userLockoutAction": "disable"}),
                "userLockoutAction",
            ),
            (
                json!({"name": "x", "networkSourceIp": "10.9.0.0/16", "sharedSecret": SECRET, "radsecEnabled": true}),
                "radsecEnabled",
            ),
            (json!({"name": "x", "networkSourceIp": "10.9.0.0/16", "sharedSecret": SECRET, "colour": "red"}), "colour"),
            (json!(["not", "an", "object"]), "body"),
        ] {
            let (st, v) = s.post("/api/radiusservers", body.clone());
            assert_eq!(st, 400, "{body}: {v}");
            assert!(v["message"].as_str().unwrap().contains(field), "{field}: {v}");
        }
        assert_eq!(s.get("/api/radiusservers").1["totalCount"], 2, "nothing half-applied");

        // PUT changes what it names and answers radiusserverput (no secret); a new secret
        // takes effect at the next request.
        let (st, v) = s.put(
            &format!("/api/radiusservers/{wifi}"),
            json!({"name": "Lobby Wi-Fi", "sharedSecret": "a-new-secret-0123456789"}),
        );
        assert_eq!(st, 200, "{v}");
        assert_eq!((v["name"].as_str(), v.get("sharedSecret")), (Some("Lobby Wi-Fi"), None));
        let ada = user(s, "ada", json!({}));
        associate(s, &wifi, "user", &ada);
        let mut old = r.nas("127.0.0.1", SECRET);
        let (b, _) = old.request("ada", PW, None, true);
        assert_eq!(old.send(&b, SILENCE), None, "the old secret no longer signs");
        let mut new = r.nas("127.0.0.1", "a-new-secret-0123456789");
        assert_eq!(new.code("ada", PW), Code::AccessAccept);
        let ev = events(s, "action=radiusserver_update");
        assert!(!serde_json::to_string(&ev).unwrap().contains("a-new-secret"), "events never hold the secret");

        // Associations: per server, both kinds, listed in JumpCloud's GraphConnection shape.
        let (st, v) = s.get(&format!("/api/v2/radiusservers/{wifi}/associations?targets=user"));
        assert_eq!(st, 200);
        assert_eq!(v, json!([{"to": {"id": ada, "type": "user", "attributes": null}, "attributes": null}]));
        let (_, v) = s.get(&format!("/api/v2/users/{ada}/associations?targets=radius_server"));
        assert_eq!(v[0]["to"]["id"], wifi.as_str());
        let (st, _) = s.get(&format!("/api/v2/radiusservers/{vpn}/associations?targets=user_group"));
        assert_eq!(st, 200);
        assert_eq!(s.get("/api/v2/radiusservers/0123456789abcdef01234567/associations?targets=user").0, 404);

        // Read-only keys read and change nothing.
        let (_, k) = s.post("/api/v2/apikeys", json!({"name": "auditor", "role": "read-only"}));
        let ro = k["key"].as_str().unwrap().to_string();
        assert_eq!(s.req("GET", "/api/radiusservers", Some(&ro), None).0, 200);
        let body = json!({"name": "x", "networkSourceIp": "10.9.0.0/16", "sharedSecret": SECRET});
        assert_eq!(s.req("POST", "/api/radiusservers", Some(&ro), Some(&body)).0, 403);
        assert_eq!(s.req("DELETE", &format!("/api/radiusservers/{wifi}"), Some(&ro), None).0, 403);
        assert_eq!(s.req("GET", "/api/radiusservers", None, None).0, 401);

        // DELETE answers the server and takes its associations: the door closes.
        let (st, v) = s.delete(&format!("/api/radiusservers/{wifi}"));
        assert_eq!((st, v["name"].as_str()), (200, Some("Lobby Wi-Fi")));
        assert_eq!(s.get(&format!("/api/radiusservers/{wifi}")).0, 404);
        assert_eq!(s.get(&format!("/api/v2/users/{ada}/associations?targets=radius_server")).1, json!([]));
        let (b, _) = new.request("ada", PW, None, true);
        assert_eq!(new.send(&b, SILENCE), None, "an unknown source again");
    }
}

/// Two administrators creating overlapping servers at once on PostgreSQL: exactly one wins.
#[test]
fn concurrent_overlapping_servers_are_refused_on_postgres() {
    for db in Db::all("radius_race") {
        if matches!(db, Db::Sqlite) {
            continue;
        }
        let r = start(&db);
        for round in 0..5 {
            let results: Vec<u16> = std::thread::scope(|sc| {
                let hs: Vec<_> = (0..4)
                    .map(|i| {
                        let s = &r.s;
                        sc.spawn(move || {
                            let src = if i % 2 == 0 { format!("10.{round}.0.0/16") } else { format!("10.{round}.7.1") };
                            s.post(
                                "/api/radiusservers",
                                json!({"name": format!("r{round}-{i}"), "networkSourceIp": src, "sharedSecret": SECRET}),
                            )
                            .0
                        })
                    })
                    .collect();
                hs.into_iter().map(|h| h.join().unwrap()).collect()
            });
            assert_eq!(results.iter().filter(|s| **s == 200).count(), 1, "round {round}: {results:?}");
            assert!(results.iter().all(|s| *s == 200 || *s == 409), "{results:?}");
        }
        assert_eq!(r.s.get("/api/radiusservers").1["totalCount"], 5);
    }
}

/// A flood from a known source is dropped past the pending bound and the listener still
/// answers afterwards.
#[test]
fn a_flood_degrades_to_drops() {
    let db = Db::Sqlite;
    let r = start(&db);
    let s = &r.s;
    let wifi = radius_server(s, "Office Wi-Fi", "127.0.0.1", SECRET, json!({}));
    let ada = user(s, "ada", json!({}));
    associate(s, &wifi, "user", &ada);
    // 2,000 distinct authentic requests at once from 8 sockets, no reply awaited.
    let mut sent = 0;
    for _ in 0..8 {
        let mut nas = r.nas("127.0.0.1", SECRET);
        for _ in 0..250 {
            let (b, _) = nas.request("nobody", PW, None, true);
            nas.sock.send_to(&b, r.addr).unwrap();
            sent += 1;
        }
    }
    assert_eq!(sent, 2000);
    r.wait_metric("cairn_radius_dropped_total{reason=\"overload\"}", 1.0);
    // When the queue drains the listener answers as before.
    let mut nas = r.nas("127.0.0.1", SECRET);
    let start = Instant::now();
    loop {
        let (b, _) = nas.request("ada", PW, None, true);
        if let Some(reply) = nas.send(&b, Duration::from_secs(5)) {
            assert_eq!(read_reply(&reply, &b, SECRET.as_bytes()).unwrap().code, Code::AccessAccept);
            break;
        }
        assert!(start.elapsed() < Duration::from_secs(300), "the listener never recovered");
    }
}

/// The admin portal's RADIUS pages: a server created with a generated secret shown once,
/// which a NAS then uses; a group associated by name lets its members in; settings saved;
/// a read-only administrator sees and changes nothing; deleting closes the door.
#[test]
fn the_admin_portal_manages_radius_servers() {
    const ADMIN_PW: &str = "correct horse battery staple";
    let r = start(&Db::Sqlite);
    let s = &r.s;
    for (email, role) in [("root@example.com", "admin"), ("viewer@example.com", "read-only")] {
        let out = s
            .command()
            .args(["admin", "create", "--email", email, "--password", ADMIN_PW, "--role", role])
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    }
    let kim = user(s, "kim", json!({}));
    group(s, "engineers", &[&kim]);
    let login = |email: &str| {
        let mut b = Browser::new(&s.base);
        b.get("/admin/login");
        let p = b.post("/admin/login", &[("email", email), ("password", ADMIN_PW)]);
        b.follow(p);
        b
    };
    let mut b = login("root@example.com");
    let p = b.get("/admin/radius");
    assert_eq!(p.status, 200, "{}", p.body);
    assert!(p.body.contains(&format!("udp://{}", r.addr)), "{}", p.body);
    assert!(p.body.contains("No RADIUS servers"));

    let p = b.post(
        "/admin/radius",
        &[("name", "Lobby Wi-Fi"), ("networkSourceIp", "127.0.0.1"), ("sharedSecret", ""), ("mfa", "DISABLED")],
    );
    assert_eq!(p.status, 200, "{}", p.body);
    let marker = "<dt>Shared secret (shown once)</dt><dd><code class=\"wrap\">";
    let at = p.body.find(marker).expect("the secret shown") + marker.len();
    let secret = p.body[at..at + p.body[at..].find('<').unwrap()].to_string();
    assert_eq!(secret.len(), 32, "{secret}");
    let p = b.get("/admin/radius");
    assert!(!p.body.contains(&secret), "shown once");
    let (_, v) = s.get("/api/radiusservers");
    let id = v["results"][0]["_id"].as_str().unwrap().to_string();

    let mut nas = r.nas("127.0.0.1", &secret);
    assert_eq!(nas.code("kim", PW), Code::AccessReject, "not associated yet");
    let p = b.post(
        &format!("/admin/radius/{id}/associations"),
        &[("op", "add"), ("type", "user_group"), ("name", "engineers")],
    );
    assert_eq!(p.status, 303, "{}", p.body);
    let p = b.get(&format!("/admin/radius/{id}"));
    assert!(p.body.contains(">engineers</a>"), "{}", p.body);
    assert!(p.body.contains("radclient"));
    assert_eq!(nas.code("kim", PW), Code::AccessAccept, "associated through the group");
    let p = b.post(
        &format!("/admin/radius/{id}/associations"),
        &[("op", "add"), ("type", "user_group"), ("name", "no such group")],
    );
    assert_eq!(p.status, 404);
    // Overlapping sources are refused on the page too.
    let p = b.post("/admin/radius", &[("name", "Other"), ("networkSourceIp", "127.0.0.0/8"), ("sharedSecret", "")]);
    assert!(matches!(p.status, 400 | 409), "{}", p.body);
    assert!(p.body.contains("overlaps") && p.body.contains("Lobby Wi-Fi"), "{}", p.body);

    let mut ro = login("viewer@example.com");
    let p = ro.get(&format!("/admin/radius/{id}"));
    assert_eq!(p.status, 200);
    assert!(!p.body.contains("Delete Lobby Wi-Fi"));
    assert_eq!(ro.post(&format!("/admin/radius/{id}"), &[("mfa", "ALWAYS")]).status, 403);
    assert_eq!(ro.post("/admin/radius", &[("name", "x"), ("networkSourceIp", "10.0.0.1")]).status, 403);

    let p = b.post(
        &format!("/admin/radius/{id}"),
        &[
            ("name", "Lobby Wi-Fi"),
            ("networkSourceIp", "127.0.0.1"),
            ("sharedSecret", ""),
            ("mfa", "DISABLED"),
            ("userLockoutAction", "MAINTAIN"),
            ("userPasswordExpirationAction", "REMOVE"),
        ],
    );
    assert_eq!(p.status, 303, "{}", p.body);
    assert_eq!(s.get(&format!("/api/radiusservers/{id}")).1["userLockoutAction"], "MAINTAIN");
    assert_eq!(nas.code("kim", PW), Code::AccessAccept, "the secret kept when left empty");

    let p = b.post(&format!("/admin/radius/{id}/delete"), &[]);
    assert_eq!(p.status, 303, "{}", p.body);
    let (bytes, _) = nas.request("kim", PW, None, true);
    assert_eq!(nas.send(&bytes, SILENCE), None, "deleted: no answer");
}

/// Two processes on one PostgreSQL: a server created through one is answered by the other's
/// listener, a suspension through one closes the other's door at the next request, and a
/// deletion silences it.
#[test]
fn a_second_process_follows_changes_on_postgres() {
    for db in Db::all("radius_two_processes") {
        if matches!(db, Db::Sqlite) {
            continue;
        }
        let a = start(&db);
        let port = free_udp_port();
        // The same data directory: the same key opens the sealed secrets.
        let b = Server::start_with(
            &db,
            &[
                ("CAIRN_BOOTSTRAP_API_KEY", common::KEY),
                ("CAIRN_RADIUS_ADDR", &format!("127.0.0.1:{port}")),
                ("CAIRN_DATA_DIR", a.s.data_dir().to_str().unwrap()),
            ],
        );
        let b_addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
        let s = &a.s;
        let wifi = radius_server(s, "Office Wi-Fi", "127.0.0.1", SECRET, json!({}));
        let ada = user(s, "ada", json!({}));
        associate(s, &wifi, "user", &ada);
        let mut nas = a.nas("127.0.0.1", SECRET);
        nas.to = b_addr;
        // The other process hears of the new server by notification, asynchronously.
        let start = Instant::now();
        loop {
            let (bytes, _) = nas.request("ada", PW, None, true);
            if let Some(reply) = nas.send(&bytes, Duration::from_secs(2)) {
                assert_eq!(read_reply(&reply, &bytes, SECRET.as_bytes()).unwrap().code, Code::AccessAccept);
                break;
            }
            assert!(start.elapsed() < Duration::from_secs(30), "the second process never learnt of the server");
        }
        let (st, _) = s.put(&format!("/api/systemusers/{ada}"), json!({"state": "SUSPENDED"}));
        assert_eq!(st, 200);
        assert_eq!(nas.code("ada", PW), Code::AccessReject, "suspended through the other process");
        let (st, _) = s.delete(&format!("/api/radiusservers/{wifi}"));
        assert_eq!(st, 200);
        let start = Instant::now();
        loop {
            let (bytes, _) = nas.request("ada", PW, None, true);
            if nas.send(&bytes, SILENCE).is_none() {
                break;
            }
            assert!(start.elapsed() < Duration::from_secs(30), "the deleted server is still answered");
        }
        drop(b);
    }
}
