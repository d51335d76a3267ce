//! The last holes of issue 13's probe, tried again against the real binary: security headers
//! on every page, file modes of the data directory, filters and NUL bytes, bulk uploads and
//! concurrent imports, and the HTTP listener's timeouts and connection cap.

mod common;

use common::{Browser, Db, Server, KEY};
use serde_json::json;

const ADMIN: &str = "root@example.com";
const ADMIN_PW: &str = "correct horse battery staple";
const PW: &str = "lantern orchard seventeen";

fn signed_in_admin(s: &Server) -> Browser {
    let out = s.command().args(["admin", "create", "--email", ADMIN, "--password", ADMIN_PW]).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let mut b = Browser::new(&s.base);
    b.get("/admin/login");
    let p = b.post("/admin/login", &[("email", ADMIN), ("password", ADMIN_PW)]);
    assert_eq!(b.follow(p).0, "/admin/users");
    b
}

fn header<'a>(p: &'a common::Page, name: &str) -> Option<&'a str> {
    p.headers.get(name).map(|v| v.to_str().unwrap())
}

/// Inline code a Content-Security-Policy without 'unsafe-inline' would block.
fn inline_code(html: &str) -> Vec<String> {
    let lower = html.to_ascii_lowercase();
    let mut found = vec![];
    let mut at = 0;
    while let Some(i) = lower[at..].find("<script") {
        let start = at + i;
        let end = start + lower[start..].find('>').unwrap();
        if !lower[start..end].contains(" src=") {
            found.push(html[start..(end + 60).min(html.len())].to_string());
        }
        at = end;
    }
    for needle in ["<style", " style=", "javascript:"] {
        if let Some(i) = lower.find(needle) {
            found.push(html[i..(i + 60).min(html.len())].to_string());
        }
    }
    // Event handler attributes: ` onclick=`, ` onchange=` …
    for (i, _) in lower.match_indices(" on") {
        let rest = &lower[i + 3..];
        let name: String = rest.chars().take_while(|c| c.is_ascii_lowercase()).collect();
        if !name.is_empty() && rest[name.len()..].starts_with('=') {
            found.push(html[i..(i + 60).min(html.len())].to_string());
        }
    }
    found
}

fn assert_page_headers(p: &common::Page, what: &str) {
    assert!(
        header(p, "content-type").unwrap_or("").starts_with("text/html"),
        "{what}: {:?}",
        header(p, "content-type")
    );
    let csp = header(p, "content-security-policy").unwrap_or_else(|| panic!("{what}: no CSP"));
    for part in ["frame-ancestors 'none'", "script-src 'self'", "default-src 'self'", "object-src 'none'"] {
        assert!(csp.contains(part), "{what}: CSP {csp} lacks {part}");
    }
    assert!(!csp.contains("unsafe-inline") && !csp.contains("unsafe-eval"), "{what}: {csp}");
    assert_eq!(header(p, "x-frame-options"), Some("DENY"), "{what}");
    assert_eq!(header(p, "x-content-type-options"), Some("nosniff"), "{what}");
    assert!(matches!(header(p, "referrer-policy"), Some("no-referrer" | "same-origin")), "{what}");
    let inline = inline_code(&p.body);
    assert!(inline.is_empty(), "{what} has inline code the CSP blocks: {inline:?}");
}

#[test]
fn every_page_forbids_framing_and_inline_code_and_https_adds_hsts() {
    let s = Server::start(&Db::Sqlite);
    let (st, u) = s.post("/api/systemusers", json!({"username": "pia", "email": "pia@example.com", "password": PW}));
    assert_eq!(st, 200, "{u}");
    let id = u["_id"].as_str().unwrap().to_string();
    let (st, g) = s.post("/api/v2/usergroups", json!({"name": "Ops"}));
    assert_eq!(st, 201, "{g}");
    let gid = g["id"].as_str().unwrap().to_string();

    let mut anon = Browser::new(&s.base);
    for path in ["/admin/login", "/portal/login", "/portal/reset-request", "/portal/reset?token=nope"] {
        let p = anon.get(path);
        assert_page_headers(&p, path);
        assert!(header(&p, "strict-transport-security").is_none(), "no HSTS over an http base URL");
    }
    let mut admin = signed_in_admin(&s);
    for path in [
        "/admin/users".to_string(),
        "/admin/users/new".into(),
        format!("/admin/users/{id}"),
        "/admin/users/columns".into(),
        "/admin/users/00000000000000000000dead".into(),
        "/admin/import".into(),
        "/admin/groups".into(),
        format!("/admin/groups/{gid}"),
        "/admin/settings".into(),
        "/admin/outbox".into(),
        "/admin/events".into(),
        "/admin/account".into(),
    ] {
        let p = admin.get(&path);
        assert_page_headers(&p, &path);
    }
    // The action pages (the forms with the scheduling script among them).
    admin.get("/admin/users");
    for action in ["schedule_activation", "activate", "delete"] {
        let p = admin.post("/admin/users/actions", &[("action", action), ("user_id", &id)]);
        assert_page_headers(&p, action);
    }
    let p = admin.post("/admin/users/actions", &[("action", "activate")]);
    assert_eq!(p.status, 400, "no users selected: the message page");
    assert_page_headers(&p, "message page");
    let mut user = Browser::new(&s.base);
    assert_eq!(user.login("pia", PW).0, "/portal/profile");
    let p = user.get("/portal/profile");
    assert_page_headers(&p, "/portal/profile");
    // The script that replaced the inline ones is served from here.
    let p = anon.get("/static/admin.js");
    assert_eq!(p.status, 200);
    assert!(header(&p, "content-type").unwrap().starts_with("text/javascript"));
    assert!(p.body.contains("select-all"));
    // Every response is nosniff, the API's too.
    let r = s.raw().get(format!("{}/api/systemusers", s.base)).header("x-api-key", KEY).send().unwrap();
    assert_eq!(r.headers().get("x-content-type-options").unwrap(), "nosniff");

    let s = Server::start_with(
        &Db::Sqlite,
        &[("CAIRN_BOOTSTRAP_API_KEY", KEY), ("CAIRN_BASE_URL", "https://directory.example.com")],
    );
    let mut anon = Browser::new(&s.base);
    for path in ["/admin/login", "/portal/login", "/healthz"] {
        let p = anon.get(path);
        let hsts = header(&p, "strict-transport-security").unwrap_or_else(|| panic!("{path}: no HSTS"));
        assert!(hsts.starts_with("max-age=") && hsts["max-age=".len()..].parse::<u64>().unwrap() >= 15_552_000);
    }
}

#[cfg(unix)]
#[test]
fn the_data_directory_and_database_files_are_private_and_tightened_at_start() {
    use std::os::unix::fs::PermissionsExt;
    let mode = |p: &std::path::Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    let mut s = Server::start(&Db::Sqlite);
    let (st, v) = s.post("/api/systemusers", json!({"username": "mo", "email": "mo@example.com"}));
    assert_eq!(st, 200, "{v}");
    let dir = s.data_dir().to_path_buf();
    let files = ["cairn.db", "cairn.db-wal", "cairn.db-shm", "secret.key"];
    assert_eq!(mode(&dir), 0o700, "the data directory");
    for f in files {
        assert_eq!(mode(&dir.join(f)), 0o600, "{f}");
    }
    // Modes an earlier version left, or a careless chmod: tightened at the next start, and said.
    s.kill();
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).unwrap();
    for f in files {
        std::fs::set_permissions(dir.join(f), std::fs::Permissions::from_mode(0o644)).unwrap();
    }
    s.restart();
    assert_eq!(mode(&dir), 0o700, "the data directory");
    for f in files {
        assert_eq!(mode(&dir.join(f)), 0o600, "{f}");
    }
    let log = s.stderr.lock().unwrap().clone();
    for f in ["cairn.db:", "cairn.db-wal:", "secret.key:"] {
        assert!(log.lines().any(|l| l.contains("tightened a file mode") && l.contains(f)), "{f} not logged:\n{log}");
    }
    // What the users of the directory see still works.
    assert_eq!(s.get("/api/systemusers").0, 200);
}

/// A 400 in JumpCloud's shape whose message names `field` (and the error list too, for REST).
fn refused(r: (u16, serde_json::Value), field: &str, what: &str) -> serde_json::Value {
    let (st, v) = r;
    assert_eq!(st, 400, "{what}: {v}");
    let text = v.to_string();
    assert!(text.contains(field), "{what}: the answer does not name {field}: {v}");
    v
}

fn rest_refused(r: (u16, serde_json::Value), field: &str, needle: &str, what: &str) {
    let v = refused(r, field, what);
    assert_eq!(v["code"], 400, "{what}: {v}");
    assert_eq!(v["status"], "Bad Request", "{what}: {v}");
    let m = v["message"].as_str().unwrap_or_default();
    assert!(m.contains(field) && m.contains(needle), "{what}: {m}");
}

fn scim_token(s: &Server) -> String {
    let (st, v) = s.post("/api/v2/scim/tokens", json!({"name": "idp"}));
    assert_eq!(st, 201, "{v}");
    v["token"].as_str().unwrap().to_string()
}

fn scim(
    s: &Server,
    token: &str,
    method: &str,
    path: &str,
    body: Option<serde_json::Value>,
) -> (u16, serde_json::Value) {
    let mut r = s
        .raw()
        .request(method.parse().unwrap(), format!("{}/scim/v2{path}", s.base))
        .header("authorization", format!("Bearer {token}"));
    if let Some(b) = body {
        r = r.header("content-type", "application/scim+json").body(b.to_string());
    }
    let res = r.send().unwrap();
    let st = res.status().as_u16();
    (st, serde_json::from_str(&res.text().unwrap()).unwrap_or(serde_json::Value::Null))
}

fn enc(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9' | b'-' | b'_' | b'.' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

#[test]
fn nul_bytes_are_refused_naming_the_field_before_the_store() {
    for db in Db::all("hardening_nul") {
        let s = Server::start(&db);
        let (st, u) = s.post("/api/systemusers", json!({"username": "nia", "email": "nia@example.com"}));
        assert_eq!(st, 200, "{u}");
        let id = u["_id"].as_str().unwrap().to_string();
        let nul = "a\u{0}b";
        // REST bodies.
        rest_refused(
            s.post("/api/systemusers", json!({"username": "z", "email": "z@example.com", "firstname": nul})),
            "firstname",
            "NUL",
            "create",
        );
        rest_refused(
            s.put(&format!("/api/systemusers/{id}"), json!({"addresses": [{"type": "work", "streetAddress": nul}]})),
            "addresses[0].streetAddress",
            "NUL",
            "update",
        );
        rest_refused(s.post("/api/v2/usergroups", json!({"name": nul})), "name", "NUL", "group");
        rest_refused(
            s.post("/api/search/systemusers", json!({"filter": [{"department": nul}]})),
            "filter[0].department",
            "NUL",
            "search body filter",
        );
        rest_refused(
            s.post("/api/search/systemusers", json!({"searchFilter": {"searchTerm": nul}})),
            "searchFilter.searchTerm",
            "NUL",
            "search body term",
        );
        // Query strings: v1 list and search, v2 group filters, export.
        for (path, field) in [
            (format!("/api/systemusers?search={}", enc(nul)), "search"),
            (format!("/api/systemusers?filter=department:$eq:{}", enc(nul)), "filter"),
            (format!("/api/systemusers?filter[or][0]=lastname:{}", enc(nul)), "filter[or][0]"),
            (format!("/api/v2/usergroups?filter=name:eq:{}", enc(nul)), "filter"),
            (format!("/api/v2/users/export?search={}", enc(nul)), "search"),
        ] {
            rest_refused(s.get(&path), field, "NUL", &path);
        }
        // SCIM filters (the escape a filter string may carry) and bodies.
        let t = scim_token(&s);
        for path in ["/Users", "/Groups"] {
            let attr = if path == "/Users" { "userName" } else { "displayName" };
            let f = format!("{attr} eq \"a\\u0000b\"");
            let v = refused(scim(&s, &t, "GET", &format!("{path}?filter={}", enc(&f)), None), "NUL", path);
            assert_eq!(v["scimType"], "invalidFilter", "{v}");
            let search = json!({"schemas": ["urn:ietf:params:scim:api:messages:2.0:SearchRequest"], "filter": f});
            refused(scim(&s, &t, "POST", &format!("{path}/.search"), Some(search)), "NUL", path);
        }
        let user = json!({
            "schemas": ["urn:ietf:params:scim:schemas:core:2.0:User"],
            "userName": "zed", "name": {"givenName": nul}, "emails": [{"value": "zed@example.com", "primary": true}],
        });
        let v = refused(scim(&s, &t, "POST", "/Users", Some(user)), "name.givenName", "SCIM create");
        assert_eq!(v["scimType"], "invalidValue", "{v}");
        let group = json!({"schemas": ["urn:ietf:params:scim:schemas:core:2.0:Group"], "displayName": nul});
        refused(scim(&s, &t, "POST", "/Groups", Some(group)), "displayName", "SCIM group");
        let patch = json!({
            "schemas": ["urn:ietf:params:scim:api:messages:2.0:PatchOp"],
            "Operations": [{"op": "replace", "path": "title", "value": nul}],
        });
        refused(scim(&s, &t, "PATCH", &format!("/Users/{id}"), Some(patch)), "Operations[0].value", "SCIM patch");
        // Nothing reached the store: no store error was logged, and the user is unchanged.
        let log = s.stderr.lock().unwrap().clone();
        assert!(!log.contains("store error") && !log.contains("ERROR"), "{db:?}:\n{log}");
        let (_, now) = s.get(&format!("/api/systemusers/{id}"));
        assert_eq!(now["addresses"], json!([]), "{now}");
    }
}

#[test]
fn filters_and_search_terms_are_capped_with_a_400_naming_the_limit() {
    for db in Db::all("hardening_filters") {
        let s = Server::start(&db);
        let q = |n: usize, key: &str| {
            (0..n).map(|i| format!("{key}[{i}]=department:$eq:d{i}")).collect::<Vec<_>>().join("&")
        };
        // At the limit, every database answers; past it, a 400 naming the limit.
        assert_eq!(s.get(&format!("/api/systemusers?{}", q(100, "filter"))).0, 200, "{db:?}");
        assert_eq!(s.get(&format!("/api/systemusers?{}", q(100, "filter[or]"))).0, 200, "{db:?}");
        for key in ["filter", "filter[or]"] {
            rest_refused(
                s.get(&format!("/api/systemusers?{}", q(1_100, key))),
                "filter",
                "at most 100 filter conditions",
                key,
            );
        }
        let or: Vec<_> = (0..1_100).map(|i| json!({"department": format!("d{i}")})).collect();
        rest_refused(
            s.post("/api/search/systemusers", json!({"filter": {"or": or}})),
            "filter",
            "at most 100 filter conditions",
            "search body",
        );
        let terms = |n: usize| (0..n).map(|i| format!("search=t{i}")).collect::<Vec<_>>().join("&");
        assert_eq!(s.get(&format!("/api/systemusers?{}", terms(20))).0, 200, "{db:?}");
        rest_refused(s.get(&format!("/api/systemusers?{}", terms(21))), "search", "at most 20 search terms", "terms");
        let many: Vec<String> = (0..20_000).map(|i| format!("t{i}")).collect();
        rest_refused(
            s.post("/api/search/systemusers", json!({"searchFilter": {"searchTerm": many}})),
            "search",
            "at most 20 search terms",
            "search body terms",
        );
        // v2 group filters.
        let gq = |n: usize| (0..n).map(|i| format!("filter=name:eq:g{i}")).collect::<Vec<_>>().join("&");
        rest_refused(s.get(&format!("/api/v2/usergroups?{}", gq(1_100))), "filter", "at most 100 filter", "groups");
        let (st, v) = s.get(&format!("/api/v2/usergroups?{}", gq(2)));
        assert_eq!((st, v), (200, json!([])), "two different names AND'ed match nothing");
        // SCIM filters.
        let t = scim_token(&s);
        let f = |n: usize| (0..n).map(|i| format!("userName eq \"u{i}\"")).collect::<Vec<_>>().join(" or ");
        assert_eq!(scim(&s, &t, "GET", &format!("/Users?filter={}", enc(&f(100))), None).0, 200);
        let v = refused(scim(&s, &t, "GET", &format!("/Users?filter={}", enc(&f(101))), None), "100", "SCIM");
        assert_eq!(v["scimType"], "invalidFilter", "{v}");
        let log = s.stderr.lock().unwrap().clone();
        assert!(!log.contains("store error") && !log.contains("ERROR"), "{db:?}:\n{log}");
    }
}

/// The server process's open sockets (Linux).
fn sockets_of(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|d| {
            d.filter_map(Result::ok)
                .filter(|e| std::fs::read_link(e.path()).is_ok_and(|l| l.to_string_lossy().starts_with("socket:")))
                .count()
        })
        .unwrap_or(0)
}

/// Sends one request on an open connection and reads its answer (it is small: `ok\n`).
fn healthz_on(c: &mut std::net::TcpStream) -> String {
    use std::io::{Read, Write};
    c.write_all(b"GET /healthz HTTP/1.1\r\nHost: cairn\r\n\r\n").unwrap();
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    while !String::from_utf8_lossy(&got).ends_with("ok\n") {
        let n = c.read(&mut buf).expect("the kept connection answers");
        assert!(n > 0, "the kept connection was closed: {}", String::from_utf8_lossy(&got));
        got.extend_from_slice(&buf[..n]);
    }
    String::from_utf8_lossy(&got).into_owned()
}

/// Whether the server ends a connection (EOF or reset) before `limit` — a liveness bound, far
/// above the timeouts, not a measurement.
fn closed_by_server(c: &mut std::net::TcpStream, drip: bool, limit: std::time::Duration) -> bool {
    use std::io::{Read, Write};
    c.set_read_timeout(Some(std::time::Duration::from_millis(300))).unwrap();
    let start = std::time::Instant::now();
    let mut buf = [0u8; 1024];
    while start.elapsed() < limit {
        if drip && c.write_all(b"a").is_err() {
            return true;
        }
        match c.read(&mut buf) {
            Ok(0) => return true,
            Ok(_) => {}
            Err(e) if matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut) => {}
            Err(_) => return true,
        }
    }
    false
}

#[cfg(target_os = "linux")]
#[test]
fn half_sent_requests_are_cut_off_and_cannot_exhaust_connections() {
    use std::io::Write;
    use std::net::TcpStream;
    use std::time::Duration;
    const CAP: usize = 20;
    let s = Server::start_with(
        &Db::Sqlite,
        &[
            ("CAIRN_BOOTSTRAP_API_KEY", KEY),
            ("CAIRN_HTTP_HEADER_TIMEOUT", "5"),
            ("CAIRN_HTTP_IDLE_TIMEOUT", "30"),
            ("CAIRN_HTTP_MAX_CONNECTIONS", "20"),
        ],
    );
    let pid = s.child.as_ref().unwrap().id();
    let addr = format!("127.0.0.1:{}", s.port);
    let idle_sockets = sockets_of(pid);
    // A kept-alive connection, open before the flood.
    let mut kept = TcpStream::connect(&addr).unwrap();
    kept.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
    assert!(healthz_on(&mut kept).starts_with("HTTP/1.1 200"));
    // Three times the cap of half-sent requests, as the probe sent 19,995 of them.
    let mut flood: Vec<TcpStream> = (0..3 * CAP)
        .map(|_| {
            let mut c = TcpStream::connect(&addr).unwrap();
            c.write_all(b"GET /healthz HTTP/1.1\r\nHost: cairn\r\nX-Slow: ").unwrap();
            c
        })
        .collect();
    // The connection already accepted keeps answering.
    assert!(healthz_on(&mut kept).starts_with("HTTP/1.1 200"), "the kept connection answers during the flood");
    // The server holds no more connections than the cap; the rest wait in the accept queue.
    std::thread::sleep(Duration::from_millis(500));
    let held = sockets_of(pid).saturating_sub(idle_sockets);
    assert!(held <= CAP, "the server holds {held} connections (cap {CAP})");
    // A new connection is answered once the timeouts have freed slots.
    let fresh = reqwest::blocking::Client::builder().timeout(Duration::from_secs(120)).build().unwrap();
    let r = fresh.get(format!("{}/healthz", s.base)).send().expect("/healthz answers after the flood");
    assert_eq!(r.status(), 200);
    // Every half-sent request was cut off by the server; a slowloris trickling its header is too.
    for c in flood.iter_mut() {
        assert!(closed_by_server(c, false, Duration::from_secs(120)), "a half-sent request stays open");
    }
    let mut slow = TcpStream::connect(&addr).unwrap();
    slow.write_all(b"GET /healthz HTTP/1.1\r\nHost: cairn\r\nX-Slow: ").unwrap();
    assert!(closed_by_server(&mut slow, true, Duration::from_secs(120)), "a slowloris is never cut off");
    // A connection that says nothing at all ends too.
    let mut silent = TcpStream::connect(&addr).unwrap();
    assert!(closed_by_server(&mut silent, false, Duration::from_secs(120)), "a silent connection stays open");
    assert_eq!(s.get("/api/systemusers").0, 200, "the server is still up");
}

/// The server's peak resident memory so far (VmHWM), in MiB.
fn peak_mib(s: &Server) -> u64 {
    let pid = s.child.as_ref().unwrap().id();
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let kb: u64 =
        status.lines().find(|l| l.starts_with("VmHWM:")).unwrap().split_whitespace().nth(1).unwrap().parse().unwrap();
    kb / 1024
}

fn post_raw(
    s: &Server,
    method: &str,
    path: &str,
    ctype: &str,
    body: Vec<u8>,
) -> (u16, serde_json::Value, Option<String>) {
    let (st, headers, text) = s.send_unread(method, path, &[("x-api-key", KEY), ("content-type", ctype)], body);
    let retry = headers.iter().find(|(k, _)| k == "retry-after").map(|(_, v)| v.clone());
    (st, serde_json::from_slice(&text).unwrap_or(serde_json::Value::Null), retry)
}

/// A JSON array of `n` users, each padded to about `size` bytes.
fn users_json(prefix: &str, n: usize, size: usize) -> Vec<u8> {
    let pad = "x".repeat(size.saturating_sub(120));
    let mut out = Vec::with_capacity(n * size + 2);
    out.push(b'[');
    for i in 0..n {
        if i > 0 {
            out.push(b',');
        }
        let e = json!({"username": format!("{prefix}{i:06}"), "email": format!("{prefix}{i:06}@example.com"), "description": pad});
        out.extend_from_slice(e.to_string().as_bytes());
    }
    out.push(b']');
    out
}

fn wait_for_job(s: &Server, id: &str) -> serde_json::Value {
    let start = std::time::Instant::now();
    loop {
        let (st, j) = s.get(&format!("/api/v2/users/import/{id}"));
        assert_eq!(st, 200, "{j}");
        if !matches!(j["status"].as_str(), Some("queued" | "running")) {
            return j;
        }
        assert!(start.elapsed() < std::time::Duration::from_secs(600), "job {id} never ends: {j}");
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
}

#[cfg(target_os = "linux")]
#[test]
fn a_bulk_array_past_the_entry_limit_is_refused_as_it_streams() {
    let s = Server::start_with(&Db::Sqlite, &[("CAIRN_BOOTSTRAP_API_KEY", KEY), ("CAIRN_LOG", "warn")]);
    // The probe's 63 MB array: 1.5 million small entries.
    let mut body = Vec::with_capacity(64_000_000);
    body.push(b'[');
    let mut i = 0;
    while body.len() < 63_000_000 {
        if i > 0 {
            body.push(b',');
        }
        body.extend_from_slice(format!("{{\"username\":\"p{i}\",\"email\":\"p{i}@x.io\"}}").as_bytes());
        i += 1;
    }
    body.push(b']');
    for method in ["POST", "PATCH"] {
        let (st, v, _) = post_raw(&s, method, "/api/v2/bulk/users", "application/json", body.clone());
        assert_eq!(st, 400, "{method}: {v}");
        assert_eq!((v["code"].as_i64(), v["status"].as_str()), (Some(400), Some("Bad Request")), "{v}");
        assert_eq!(v["errors"][0]["field"], "body", "{v}");
        assert!(v["message"].as_str().unwrap().contains("at most 100,000 users per job"), "{v}");
    }
    // Counted as it streamed, one entry at a time: the array was never held (it took 3.4 GB).
    let peak = peak_mib(&s);
    eprintln!("peak RSS after the refused arrays: {peak} MiB");
    assert!(peak < 200, "peak RSS {peak} MiB for a refused 63 MB array");
    // Larger than the body limit: 413; not an array, empty, malformed: 400 naming the body.
    let (st, v, _) = post_raw(&s, "POST", "/api/v2/bulk/users", "application/json", vec![b' '; 65 * 1024 * 1024]);
    assert_eq!(st, 413, "{v}");
    for (bad, says) in [
        (&b"{\"username\":\"a\"}"[..], "must be a JSON array of users"),
        (b"[]", "the list of users is empty"),
        (b"[{\"username\":\"a\"}", "malformed JSON"),
        (b"", "a JSON request body is required"),
    ] {
        let (st, v, _) = post_raw(&s, "POST", "/api/v2/bulk/users", "application/json", bad.to_vec());
        assert_eq!(st, 400, "{v}");
        assert!(v["message"].as_str().unwrap().contains(says), "{says}: {v}");
    }
    assert_eq!(s.get("/api/systemusers?limit=1").1["totalCount"], 0, "nothing was created");
}

/// An upload the server has begun to take (it asked for the body with `100 Continue`) and that
/// is never finished: it holds one of the import places.
fn held_upload(s: &Server, path: &str) -> std::net::TcpStream {
    use std::io::{Read, Write};
    let mut c = std::net::TcpStream::connect(format!("127.0.0.1:{}", s.port)).unwrap();
    c.set_read_timeout(Some(std::time::Duration::from_secs(60))).unwrap();
    let head = format!(
        "POST {path} HTTP/1.1\r\nHost: cairn\r\nx-api-key: {KEY}\r\nContent-Type: text/csv\r\n\
         Content-Length: 10000000\r\nExpect: 100-continue\r\n\r\n"
    );
    c.write_all(head.as_bytes()).unwrap();
    let mut got = Vec::new();
    let mut buf = [0u8; 512];
    while !String::from_utf8_lossy(&got).contains("\r\n\r\n") {
        let n = c.read(&mut buf).unwrap();
        assert!(n > 0, "the server closed the held upload");
        got.extend_from_slice(&buf[..n]);
    }
    assert!(String::from_utf8_lossy(&got).starts_with("HTTP/1.1 100"), "{}", String::from_utf8_lossy(&got));
    c.write_all(b"Username,Email\nheld,held@example.com\n").unwrap();
    c
}

#[test]
fn imports_past_the_cap_are_refused_with_a_429_before_their_body_is_read() {
    let s = Server::start_with(&Db::Sqlite, &[("CAIRN_BOOTSTRAP_API_KEY", KEY), ("CAIRN_MAX_CONCURRENT_IMPORTS", "2")]);
    let csv = b"Username,Email\nivy,ivy@example.com\n".to_vec();
    let one = held_upload(&s, "/api/v2/users/import");
    let two = held_upload(&s, "/api/v2/users/import?dry_run=true");
    // A third import, a bulk job, a bulk update: all refused, clearly, while two run.
    for (method, path, ctype, body) in [
        ("POST", "/api/v2/users/import", "text/csv", csv.clone()),
        ("POST", "/api/v2/bulk/users", "application/json", users_json("b", 3, 200)),
        ("PATCH", "/api/v2/bulk/users", "application/json", b"[{\"id\":\"0123456789abcdef01234567\"}]".to_vec()),
    ] {
        let (st, v, retry) = post_raw(&s, method, path, ctype, body);
        assert_eq!(st, 429, "{method} {path}: {v}");
        assert_eq!((v["code"].as_i64(), v["status"].as_str()), (Some(429), Some("Too Many Requests")), "{v}");
        let m = v["message"].as_str().unwrap();
        assert!(m.contains("2 imports are already running") && m.contains("CAIRN_MAX_CONCURRENT_IMPORTS"), "{m}");
        assert!(retry.is_some_and(|r| r.parse::<u32>().is_ok()), "a Retry-After header");
    }
    // The admin portal's import shares the places.
    let out = s.command().args(["admin", "create", "--email", ADMIN, "--password", ADMIN_PW]).output().unwrap();
    assert!(out.status.success());
    let mut b = Browser::new(&s.base);
    b.get("/admin/login");
    b.post("/admin/login", &[("email", ADMIN), ("password", ADMIN_PW)]);
    let page = b.get("/admin/import");
    assert_eq!(page.status, 200);
    let csrf = page.body.split("name=\"csrf\" value=\"").nth(1).unwrap().split('"').next().unwrap().to_string();
    let boundary = "cairn-test-boundary";
    let mut form = format!(
        "--{boundary}\r\nContent-Disposition: form-data; name=\"csrf\"\r\n\r\n{csrf}\r\n--{boundary}\r\n\
         Content-Disposition: form-data; name=\"file\"; filename=\"people.csv\"\r\nContent-Type: text/csv\r\n\r\n"
    )
    .into_bytes();
    form.extend_from_slice(&csv);
    form.extend_from_slice(format!("\r\n--{boundary}--\r\n").as_bytes());
    let r = b.post_body("/admin/import", &format!("multipart/form-data; boundary={boundary}"), form);
    assert_eq!(r.status, 429, "{}", r.body);
    assert!(r.body.contains("Imports are busy"), "{}", r.body);
    // One ends (its client went away): its place is free again.
    drop(one);
    let start = std::time::Instant::now();
    let job = loop {
        let (st, v, _) = post_raw(&s, "POST", "/api/v2/users/import", "text/csv", csv.clone());
        if st == 202 {
            break v["jobId"].as_str().unwrap().to_string();
        }
        assert_eq!(st, 429, "{v}");
        assert!(start.elapsed() < std::time::Duration::from_secs(60), "the place of a dropped upload is never freed");
        std::thread::sleep(std::time::Duration::from_millis(100));
    };
    assert_eq!(wait_for_job(&s, &job)["counts"]["created"], 1);
    drop(two);
    // Uploads wait in unnamed files: nothing is left in the data directory.
    let mut names: Vec<String> = std::fs::read_dir(s.data_dir())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    assert!(names.iter().all(|n| n.starts_with("cairn.db") || n == "secret.key"), "{names:?}");
}

#[cfg(target_os = "linux")]
#[test]
fn four_parallel_maximum_bulk_uploads_keep_memory_bounded() {
    let s = Server::start_with(&Db::Sqlite, &[("CAIRN_BOOTSTRAP_API_KEY", KEY), ("CAIRN_LOG", "warn")]);
    let (st, _) = s.put(
        "/api/organizations",
        json!({"settings": {"newSystemUserStateDefaults": {"csvImport": "STAGED", "applicationImport": "STAGED"}}}),
    );
    assert_eq!(st, 200);
    // The largest job accepted: 100,000 users in about 60 MB, four at once.
    let bodies: Vec<Vec<u8>> = ["ba", "bb", "bc", "bd"].iter().map(|p| users_json(p, 100_000, 600)).collect();
    assert!(bodies[0].len() > 55_000_000 && bodies[0].len() < 64 * 1024 * 1024);
    let answers: Vec<(u16, serde_json::Value, Option<String>)> = std::thread::scope(|sc| {
        let hs: Vec<_> = bodies
            .into_iter()
            .map(|b| sc.spawn(|| post_raw(&s, "POST", "/api/v2/bulk/users", "application/json", b)))
            .collect();
        hs.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let mut statuses: Vec<u16> = answers.iter().map(|a| a.0).collect();
    statuses.sort();
    assert!(statuses.iter().all(|s| *s == 201 || *s == 429), "{answers:?}");
    assert!(statuses.contains(&201), "{answers:?}");
    assert!(statuses.iter().filter(|s| **s == 201).count() <= 2, "at most two run at once: {answers:?}");
    for (_, v, _) in answers.iter().filter(|a| a.0 == 201) {
        let j = wait_for_job(&s, v["jobId"].as_str().unwrap());
        assert_eq!(j["counts"]["created"], 100_000, "{j}");
    }
    let peak = peak_mib(&s);
    eprintln!("peak RSS under four maximum bulk uploads: {peak} MiB ({statuses:?})");
    assert!(peak <= 300, "peak RSS {peak} MiB under four maximum bulk uploads");
}
