//! End-to-end: the OpenID Connect provider as a relying party and a person's user agent use
//! it (an HTTP client keeping cookies, following the portal's pages), and as an attacker
//! would, on SQLite and (with CAIRN_TEST_DATABASE_URL) PostgreSQL. The browser test with a
//! real OIDC client library is `oidc_browser.rs`.

mod common;

use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64URL;
use base64::Engine;
use common::{Browser, Db, Server, KEY};
use serde_json::{json, Value};
use sha2::{Digest, Sha256};

pub const PW: &str = "lantern orchard seventeen";
pub const REDIRECT: &str = "http://127.0.0.1:9/cb";

pub fn start(db: &Db, clock: Option<&std::path::Path>) -> Server {
    let mut env = vec![("CAIRN_BOOTSTRAP_API_KEY", KEY), ("CAIRN_BASE_URL", "{base}")];
    if let Some(c) = clock {
        env.push(("CAIRN_TEST_CLOCK_FILE", c.to_str().unwrap()));
    }
    Server::start_with(db, &env)
}

pub struct App {
    pub id: String,
    pub client_id: String,
    pub secret: Option<String>,
}

pub fn app(s: &Server, body: Value) -> App {
    let (st, v) = s.post("/api/applications", body.clone());
    assert_eq!(st, 201, "{body}: {v}");
    App {
        id: v["_id"].as_str().unwrap().into(),
        client_id: v["clientId"].as_str().unwrap().into(),
        secret: v["clientSecret"].as_str().map(String::from),
    }
}

pub fn user(s: &Server, name: &str) -> String {
    let (st, v) = s.post(
        "/api/systemusers",
        json!({"username": name, "email": format!("{name}@example.com"), "password": PW, "firstname": "Ada"}),
    );
    assert_eq!(st, 200, "{v}");
    v["_id"].as_str().unwrap().to_string()
}

pub fn associate(s: &Server, app: &App, kind: &str, id: &str) {
    let (st, v) =
        s.post(&format!("/api/v2/applications/{}/associations", app.id), json!({"op": "add", "type": kind, "id": id}));
    assert_eq!(st, 204, "{v}");
}

pub fn pkce() -> (String, String) {
    let verifier = B64URL.encode(rand::random::<[u8; 32]>());
    let challenge = B64URL.encode(Sha256::digest(verifier.as_bytes()));
    (verifier, challenge)
}

pub fn authorize_url(client_id: &str, challenge: Option<&str>, extra: &[(&str, &str)]) -> String {
    let mut q: Vec<(&str, &str)> = vec![
        ("response_type", "code"),
        ("client_id", client_id),
        ("redirect_uri", REDIRECT),
        ("scope", "openid profile email groups"),
        ("state", "st-123"),
        ("nonce", "n-456"),
    ];
    if let Some(c) = challenge {
        q.push(("code_challenge", c));
        q.push(("code_challenge_method", "S256"));
    }
    q.retain(|(k, _)| !extra.iter().any(|(e, _)| e == k));
    q.extend_from_slice(extra);
    format!("/portal/oidc/authorize?{}", serde_urlencoded::to_string(&q).unwrap())
}

/// The query parameters of a redirect to the relying party.
pub fn params_of(location: &str) -> Vec<(String, String)> {
    let q = location.split_once('?').map(|(_, q)| q).unwrap_or("");
    serde_urlencoded::from_str(q).unwrap()
}

pub fn param(location: &str, k: &str) -> Option<String> {
    params_of(location).into_iter().find(|(n, _)| n == k).map(|(_, v)| v)
}

/// The continue link of the portal's "signing you in" page.
fn continue_link(body: &str) -> Option<String> {
    let i = body.find("id=\"continue\" href=\"")? + 20;
    Some(body[i..i + body[i..].find('"')?].replace("&amp;", "&").replace("&#x3D;", "=").replace("&#x2F;", "/"))
}

/// Runs an authorization request as a user agent: the login page when asked (with the TOTP
/// step when `code` is given), the continue page, up to the redirect to the relying party.
/// Returns that redirect's URL.
pub fn sign_in(b: &mut Browser, url: &str, login: &str, code: Option<&dyn Fn() -> String>) -> String {
    let mut p = b.get(url);
    for _ in 0..10 {
        if let Some(loc) = p.location.clone() {
            if loc.starts_with(REDIRECT) {
                return loc;
            }
            p = b.get(&loc);
            continue;
        }
        if p.body.contains("name=\"password\"") && p.body.contains("name=\"login\"") {
            p = b.post("/portal/login", &[("login", login), ("password", PW)]);
        } else if p.body.contains("name=\"code\"") {
            let c = code.expect("a code is asked for")();
            p = b.post("/portal/totp", &[("code", &c)]);
        } else if let Some(next) = continue_link(&p.body) {
            p = b.get(&next);
        } else {
            panic!("stuck at {}: {}", p.status, p.body);
        }
    }
    panic!("too many steps");
}

pub fn token(s: &Server, a: &App, form: &[(&str, &str)]) -> (u16, Value) {
    let mut r = s.raw().post(format!("{}/oidc/token", s.base)).form(form);
    if let Some(secret) = &a.secret {
        r = r.basic_auth(&a.client_id, Some(secret));
    }
    let res = r.send().unwrap();
    let st = res.status().as_u16();
    assert_ne!(st, 500, "server error: {}", s.stderr.lock().unwrap());
    (st, res.json().unwrap_or(Value::Null))
}

/// The authorization code grant with PKCE, as the tests' relying party sends it.
pub fn redeem(s: &Server, a: &App, code: &str, verifier: &str) -> (u16, Value) {
    token(
        s,
        a,
        &[
            ("grant_type", "authorization_code"),
            ("code", code),
            ("redirect_uri", REDIRECT),
            ("code_verifier", verifier),
        ],
    )
}

pub fn refresh_grant(s: &Server, a: &App, refresh_token: &str) -> (u16, Value) {
    token(s, a, &[("grant_type", "refresh_token"), ("refresh_token", refresh_token)])
}

pub fn introspect(s: &Server, a: &App, t: &str) -> Value {
    let res = s
        .raw()
        .post(format!("{}/oidc/introspect", s.base))
        .basic_auth(&a.client_id, a.secret.as_deref())
        .form(&[("token", t)])
        .send()
        .unwrap();
    assert_eq!(res.status(), 200);
    res.json().unwrap()
}

pub fn userinfo(s: &Server, t: &str) -> (u16, Value) {
    let res = s.raw().get(format!("{}/oidc/userinfo", s.base)).bearer_auth(t).send().unwrap();
    let st = res.status().as_u16();
    (st, res.json().unwrap_or(Value::Null))
}

/// An ID token's claims, verified against the provider's JWKS (signature, issuer, audience).
pub fn verify_id_token(s: &Server, id_token: &str, aud: &str) -> Value {
    let header = jsonwebtoken::decode_header(id_token).unwrap();
    let (_, jwks) = s.get("/oidc/jwks");
    let kid = header.kid.clone().unwrap();
    let jwk = jwks["keys"].as_array().unwrap().iter().find(|k| k["kid"] == kid.as_str()).expect("kid in the JWKS");
    let key = match header.alg {
        jsonwebtoken::Algorithm::RS256 => {
            jsonwebtoken::DecodingKey::from_rsa_components(jwk["n"].as_str().unwrap(), jwk["e"].as_str().unwrap())
                .unwrap()
        }
        jsonwebtoken::Algorithm::EdDSA => {
            jsonwebtoken::DecodingKey::from_ed_components(jwk["x"].as_str().unwrap()).unwrap()
        }
        a => panic!("unexpected alg {a:?}"),
    };
    let mut v = jsonwebtoken::Validation::new(header.alg);
    v.set_audience(&[aud]);
    v.set_issuer(&[s.base.as_str()]);
    jsonwebtoken::decode::<Value>(id_token, &key, &v).expect("a valid ID token").claims
}

fn events(s: &Server, action: &str) -> Vec<Value> {
    let (_, v) = s.get(&format!("/api/v2/events?action={action}&limit=1000"));
    v.as_array().cloned().unwrap_or_default()
}

fn flow(db: &Db) {
    let s = start(db, None);
    let (st, d) = s.get("/.well-known/openid-configuration");
    assert_eq!((st, d["issuer"].as_str()), (200, Some(s.base.as_str())), "{d}");
    assert_eq!(d["code_challenge_methods_supported"], json!(["S256"]));
    let wiki = app(
        &s,
        json!({"name": "Wiki", "redirectUris": [REDIRECT], "postLogoutRedirectUris": ["http://127.0.0.1:9/bye"]}),
    );
    let ada = user(&s, "ada");
    let bob = user(&s, "bob");
    let (_, g) = s.post("/api/v2/usergroups", json!({"name": "eng"}));
    let gid = g["id"].as_str().unwrap().to_string();
    s.post(&format!("/api/v2/usergroups/{gid}/members"), json!({"op": "add", "type": "user", "id": ada}));
    associate(&s, &wiki, "user_group", &gid);

    // The code flow with PKCE, through the portal's login.
    let (verifier, challenge) = pkce();
    let mut b = Browser::new(&s.base);
    let back = sign_in(&mut b, &authorize_url(&wiki.client_id, Some(&challenge), &[]), "ada", None);
    assert_eq!(param(&back, "state").as_deref(), Some("st-123"));
    assert_eq!(param(&back, "iss").as_deref(), Some(s.base.as_str()));
    let code = param(&back, "code").expect("a code");
    let (st, t) = redeem(&s, &wiki, &code, &verifier);
    assert_eq!(st, 200, "{t}");
    assert_eq!((t["token_type"].as_str(), t["expires_in"].as_i64()), (Some("Bearer"), Some(300)));
    let claims = verify_id_token(&s, t["id_token"].as_str().unwrap(), &wiki.client_id);
    assert_eq!(claims["sub"].as_str(), Some(ada.as_str()));
    assert_eq!(claims["nonce"], "n-456");
    assert_eq!(claims["email"], "ada@example.com");
    assert_eq!(claims["preferred_username"], "ada");
    assert_eq!(claims["groups"], json!(["eng"]));
    let access = t["access_token"].as_str().unwrap().to_string();
    let refresh = t["refresh_token"].as_str().unwrap().to_string();
    let (st, ui) = userinfo(&s, &access);
    assert_eq!((st, ui["sub"].as_str(), ui["email"].as_str()), (200, Some(ada.as_str()), Some("ada@example.com")));
    let i = introspect(&s, &wiki, &access);
    assert_eq!((i["active"].as_bool(), i["username"].as_str()), (Some(true), Some("ada")), "{i}");

    // Refresh rotates; the spent token presented again revokes the family.
    let (st, r1) = refresh_grant(&s, &wiki, &refresh);
    assert_eq!(st, 200, "{r1}");
    assert_ne!(r1["refresh_token"], t["refresh_token"]);
    verify_id_token(&s, r1["id_token"].as_str().unwrap(), &wiki.client_id);
    let (st, e) = refresh_grant(&s, &wiki, &refresh);
    assert_eq!((st, e["error"].as_str()), (400, Some("invalid_grant")), "{e}");
    let (st, _) =
        token(&s, &wiki, &[("grant_type", "refresh_token"), ("refresh_token", r1["refresh_token"].as_str().unwrap())]);
    assert_eq!(st, 400, "the family is revoked");
    assert_eq!(introspect(&s, &wiki, r1["access_token"].as_str().unwrap())["active"], false);
    assert!(!events(&s, "oidc_refresh").is_empty());

    // Single sign-on: the portal session gives the next code without a login page.
    let url = authorize_url(&wiki.client_id, Some(&challenge), &[]);
    let p = b.get(&url);
    let loc = p.location.expect("a redirect");
    assert!(loc.starts_with(REDIRECT), "{loc}");
    // prompt=none with the session works; max_age=0 asks for the login again.
    let p = b.get(&authorize_url(&wiki.client_id, Some(&challenge), &[("prompt", "none")]));
    assert!(param(p.location.as_deref().unwrap(), "code").is_some());
    let p = b.get(&authorize_url(&wiki.client_id, Some(&challenge), &[("max_age", "0")]));
    assert!(p.location.as_deref().unwrap().starts_with("/portal/login?oidc="), "{:?}", p.location);

    // Code reuse: refused, and what the code gave is revoked.
    let code = param(&loc, "code").unwrap();
    let form = [
        ("grant_type", "authorization_code"),
        ("code", code.as_str()),
        ("redirect_uri", REDIRECT),
        ("code_verifier", verifier.as_str()),
    ];
    let (st, t2) = token(&s, &wiki, &form);
    assert_eq!(st, 200, "{t2}");
    let (st, e) = token(&s, &wiki, &form);
    assert_eq!((st, e["error"].as_str()), (400, Some("invalid_grant")));
    assert_eq!(introspect(&s, &wiki, t2["access_token"].as_str().unwrap())["active"], false);
    let (st, _) =
        token(&s, &wiki, &[("grant_type", "refresh_token"), ("refresh_token", t2["refresh_token"].as_str().unwrap())]);
    assert_eq!(st, 400);
    assert!(events(&s, "oidc_token").iter().any(|e| e["outcome"] == "failure"));

    // Suspension: refresh refused, introspection inactive, userinfo refused, no new code.
    let p = b.get(&authorize_url(&wiki.client_id, Some(&challenge), &[]));
    let code = param(p.location.as_deref().unwrap(), "code").unwrap();
    let (_, t3) = redeem(&s, &wiki, &code, &verifier);
    let (st, _) = s.post(&format!("/api/systemusers/{ada}/state/suspend"), json!({}));
    assert_eq!(st, 200);
    let (st, e) =
        token(&s, &wiki, &[("grant_type", "refresh_token"), ("refresh_token", t3["refresh_token"].as_str().unwrap())]);
    assert_eq!((st, e["error"].as_str()), (400, Some("invalid_grant")));
    assert_eq!(introspect(&s, &wiki, t3["access_token"].as_str().unwrap())["active"], false);
    assert_eq!(userinfo(&s, t3["access_token"].as_str().unwrap()).0, 401);
    let back = sign_in(&mut b, &authorize_url(&wiki.client_id, Some(&challenge), &[]), "ada", None);
    assert_eq!(param(&back, "error").as_deref(), Some("access_denied"), "{back}");
    assert_eq!(param(&back, "code"), None);
    s.post(&format!("/api/systemusers/{ada}/state/activate"), json!({}));

    // Not associated: access_denied after the right password, never a code.
    let mut bb = Browser::new(&s.base);
    let back = sign_in(&mut bb, &authorize_url(&wiki.client_id, Some(&challenge), &[]), "bob", None);
    assert_eq!(param(&back, "error").as_deref(), Some("access_denied"), "{back}");
    assert_eq!(param(&back, "state").as_deref(), Some("st-123"));
    let _ = bob;

    // Removal from the application's group ends the tokens at once.
    let mut bc = Browser::new(&s.base);
    let back = sign_in(&mut bc, &authorize_url(&wiki.client_id, Some(&challenge), &[]), "ada", None);
    let code = param(&back, "code").unwrap();
    let (_, t4) = redeem(&s, &wiki, &code, &verifier);
    assert_eq!(introspect(&s, &wiki, t4["access_token"].as_str().unwrap())["active"], true);
    s.post(&format!("/api/v2/usergroups/{gid}/members"), json!({"op": "remove", "type": "user", "id": ada}));
    assert_eq!(introspect(&s, &wiki, t4["access_token"].as_str().unwrap())["active"], false);
    let (st, _) =
        token(&s, &wiki, &[("grant_type", "refresh_token"), ("refresh_token", t4["refresh_token"].as_str().unwrap())]);
    assert_eq!(st, 400);

    // RP-initiated logout with the ID token as hint ends the portal session.
    s.post(&format!("/api/v2/usergroups/{gid}/members"), json!({"op": "add", "type": "user", "id": ada}));
    let mut bd = Browser::new(&s.base);
    let back = sign_in(&mut bd, &authorize_url(&wiki.client_id, Some(&challenge), &[]), "ada", None);
    let code = param(&back, "code").unwrap();
    let (_, t5) = redeem(&s, &wiki, &code, &verifier);
    let q = serde_urlencoded::to_string([
        ("id_token_hint", t5["id_token"].as_str().unwrap()),
        ("post_logout_redirect_uri", "http://127.0.0.1:9/bye"),
        ("state", "bye-1"),
    ])
    .unwrap();
    let p = bd.get(&format!("/portal/oidc/logout?{q}"));
    assert_eq!(p.location.as_deref(), Some("http://127.0.0.1:9/bye?state=bye-1"));
    let p = bd.get(&authorize_url(&wiki.client_id, Some(&challenge), &[("prompt", "none")]));
    assert_eq!(param(p.location.as_deref().unwrap(), "error").as_deref(), Some("login_required"));
    // A post-logout URI that is not registered is refused before any redirect.
    let q = serde_urlencoded::to_string([
        ("client_id", wiki.client_id.as_str()),
        ("post_logout_redirect_uri", "https://evil.example/"),
    ])
    .unwrap();
    let p = bd.get(&format!("/portal/oidc/logout?{q}"));
    assert_eq!((p.status, p.location), (400, None));

    // Revocation (RFC 7009) of a refresh token ends its family.
    let back = sign_in(&mut bd, &authorize_url(&wiki.client_id, Some(&challenge), &[]), "ada", None);
    let code = param(&back, "code").unwrap();
    let (_, t6) = redeem(&s, &wiki, &code, &verifier);
    let res = s
        .raw()
        .post(format!("{}/oidc/revoke", s.base))
        .form(&[
            ("token", t6["refresh_token"].as_str().unwrap()),
            ("client_id", &wiki.client_id),
            ("client_secret", wiki.secret.as_deref().unwrap()),
        ])
        .send()
        .unwrap();
    // The registered method is client_secret_basic: the post form is refused.
    assert_eq!(res.status(), 401);
    let res = s
        .raw()
        .post(format!("{}/oidc/revoke", s.base))
        .basic_auth(&wiki.client_id, wiki.secret.as_deref())
        .form(&[("token", t6["refresh_token"].as_str().unwrap())])
        .send()
        .unwrap();
    assert_eq!(res.status(), 200);
    assert_eq!(introspect(&s, &wiki, t6["access_token"].as_str().unwrap())["active"], false);
    for a in ["oidc_authorize", "oidc_token", "oidc_refresh", "oidc_revoke", "oidc_logout"] {
        assert!(!events(&s, a).is_empty(), "{a} recorded");
    }
}

#[test]
fn an_application_signs_people_in_through_the_portal_and_loses_them_at_suspension() {
    for db in Db::all("oidc flow on PostgreSQL") {
        flow(&db);
    }
}

fn attacks(db: &Db) {
    let s = start(db, None);
    let wiki = app(&s, json!({"name": "Wiki", "redirectUris": [REDIRECT]}));
    let other =
        app(&s, json!({"name": "Other", "redirectUris": [REDIRECT], "tokenEndpointAuthMethod": "client_secret_post"}));
    let spa = app(&s, json!({"name": "SPA", "public": true, "redirectUris": [REDIRECT]}));
    let ada = user(&s, "ada");
    for a in [&wiki, &other, &spa] {
        associate(&s, a, "user", &ada);
    }
    let raw = reqwest::blocking::Client::builder().redirect(reqwest::redirect::Policy::none()).build().unwrap();
    let get = |path: &str| raw.get(format!("{}{path}", s.base)).send().unwrap();

    // Wrong or unregistered redirect URIs: an error page, never a redirect.
    for uri in
        ["https://evil.example/cb", "http://127.0.0.1:9/cb/../evil", "http://127.0.0.1:9/cbx", "http://127.0.0.1:9/"]
    {
        let url = authorize_url(&wiki.client_id, None, &[]).replace(
            &serde_urlencoded::to_string([("", REDIRECT)]).unwrap()[1..],
            &serde_urlencoded::to_string([("", uri)]).unwrap()[1..],
        );
        let r = get(&url);
        assert_eq!(r.status(), 400, "{uri}");
        assert!(r.headers().get("location").is_none(), "{uri}");
    }
    let r = get("/portal/oidc/authorize?response_type=code&client_id=nope&redirect_uri=https%3A%2F%2Fevil.example%2F");
    assert_eq!((r.status().as_u16(), r.headers().get("location").is_none()), (400, true));
    // Huge and malformed requests: refused whole.
    let r = get(&authorize_url(&wiki.client_id, None, &[("state", &"x".repeat(20_000))]));
    assert!(r.status() == 400 || r.status() == 414 || r.status() == 431, "{}", r.status());
    let r = get(&format!("{}&client_id=again", authorize_url(&wiki.client_id, None, &[])));
    assert_eq!(r.status(), 400);
    // Once the client and redirect URI hold, errors go back to the client with state.
    for (extra, error) in [
        (vec![("response_type", "token")], "unsupported_response_type"),
        (vec![("code_challenge", "abc"), ("code_challenge_method", "plain")], "invalid_request"),
        (vec![("scope", "profile")], "invalid_scope"),
        (vec![("request", "eyJ")], "request_not_supported"),
        (vec![("prompt", "none")], "login_required"),
    ] {
        let r = get(&authorize_url(&wiki.client_id, None, &extra));
        let loc = r.headers().get("location").map(|v| v.to_str().unwrap().to_string()).unwrap_or_default();
        assert_eq!(param(&loc, "error").as_deref(), Some(error), "{extra:?}: {loc}");
        assert_eq!(param(&loc, "state").as_deref(), Some("st-123"));
    }
    // A public client must use PKCE.
    let r = get(&authorize_url(&spa.client_id, None, &[]));
    let loc = r.headers()["location"].to_str().unwrap().to_string();
    assert_eq!(param(&loc, "error").as_deref(), Some("invalid_request"), "{loc}");

    // A code for one client is no good to another, and is not spent by its attempt.
    let (verifier, challenge) = pkce();
    let mut b = Browser::new(&s.base);
    let back = sign_in(&mut b, &authorize_url(&wiki.client_id, Some(&challenge), &[]), "ada", None);
    let code = param(&back, "code").unwrap();
    let form = [
        ("grant_type", "authorization_code"),
        ("code", code.as_str()),
        ("redirect_uri", REDIRECT),
        ("code_verifier", verifier.as_str()),
    ];
    let mut other_form = form.to_vec();
    other_form.push(("client_id", &other.client_id));
    other_form.push(("client_secret", other.secret.as_deref().unwrap()));
    let res = s.raw().post(format!("{}/oidc/token", s.base)).form(&other_form).send().unwrap();
    assert_eq!(res.status(), 400);
    assert_eq!(res.json::<Value>().unwrap()["error"], "invalid_grant");
    // Wrong secrets, a missing one, a NUL, a huge body: refused.
    let bad = App { id: wiki.id.clone(), client_id: wiki.client_id.clone(), secret: Some("cairn_cs_wrong".into()) };
    assert_eq!(token(&s, &bad, &form).0, 401);
    let nul = App { secret: Some("a\0b".into()), ..bad };
    assert_eq!(token(&s, &nul, &form).0, 401);
    let res = s.raw().post(format!("{}/oidc/token", s.base)).form(&form).send().unwrap();
    assert_eq!(res.status(), 401, "no client authentication");
    let (st, _, _) = s.send_unread(
        "POST",
        "/oidc/token",
        &[("content-type", "application/x-www-form-urlencoded")],
        vec![b'a'; 2_000_000],
    );
    assert_eq!(st, 413);
    // A wrong verifier spends the code; the right one afterwards is refused.
    let mut wrong = form.to_vec();
    wrong[3] = ("code_verifier", "x".repeat(50).leak());
    assert_eq!(token(&s, &wiki, &wrong).1["error"], "invalid_grant");
    assert_eq!(token(&s, &wiki, &form).0, 400);
    // A verifier without a challenge is a downgrade.
    let back = sign_in(&mut b, &authorize_url(&wiki.client_id, None, &[]), "ada", None);
    let code = param(&back, "code").unwrap();
    let (st, e) = redeem(&s, &wiki, &code, &verifier);
    assert_eq!((st, e["error"].as_str()), (400, Some("invalid_grant")));
    // A wrong redirect_uri at the token endpoint.
    let back = sign_in(&mut b, &authorize_url(&wiki.client_id, Some(&challenge), &[]), "ada", None);
    let code = param(&back, "code").unwrap();
    let (st, _) = token(
        &s,
        &wiki,
        &[
            ("grant_type", "authorization_code"),
            ("code", &code),
            ("redirect_uri", "http://127.0.0.1:9/other"),
            ("code_verifier", &verifier),
        ],
    );
    assert_eq!(st, 400);
    // The public client: PKCE, no secret; its tokens cannot be introspected by another client.
    let mut b2 = Browser::new(&s.base);
    let back = sign_in(&mut b2, &authorize_url(&spa.client_id, Some(&challenge), &[]), "ada", None);
    let code = param(&back, "code").unwrap();
    let res = s
        .raw()
        .post(format!("{}/oidc/token", s.base))
        .form(&[
            ("grant_type", "authorization_code"),
            ("code", &code),
            ("redirect_uri", REDIRECT),
            ("code_verifier", &verifier),
            ("client_id", &spa.client_id),
        ])
        .send()
        .unwrap();
    assert_eq!(res.status(), 200);
    let t: Value = res.json().unwrap();
    assert_eq!(introspect(&s, &wiki, t["access_token"].as_str().unwrap())["active"], false, "another client's token");
    assert_eq!(userinfo(&s, t["access_token"].as_str().unwrap()).0, 200);
    // Made-up codes and tokens: refused; a flood is throttled.
    assert_eq!(userinfo(&s, "forged").0, 401);
    assert_eq!(introspect(&s, &wiki, "forged")["active"], false);
    let mut statuses = vec![];
    for i in 0..40 {
        let (st, _) = token(
            &s,
            &wiki,
            &[("grant_type", "authorization_code"), ("code", &format!("forged-{i}")), ("redirect_uri", REDIRECT)],
        );
        statuses.push(st);
    }
    assert!(statuses[..20].iter().all(|s| *s == 400), "{statuses:?}");
    assert!(statuses.contains(&429), "{statuses:?}");
}

#[test]
fn attackers_get_no_code_no_token_and_no_redirect() {
    for db in Db::all("oidc attacks on PostgreSQL") {
        attacks(&db);
    }
}

fn totp_and_keys(db: &Db) {
    let dir = tempfile::tempdir().unwrap();
    let clock = dir.path().join("clock");
    std::fs::write(&clock, "0").unwrap();
    let s = start(db, Some(&clock));
    let ed = app(
        &s,
        json!({"name": "Ed", "redirectUris": [REDIRECT], "idTokenSignedResponseAlg": "EdDSA", "requireMfa": true}),
    );
    let ada = user(&s, "ada");
    associate(&s, &ed, "user", &ada);
    // The application requires a second factor: the person enrols, then comes back.
    let (verifier, challenge) = pkce();
    let mut b = Browser::new(&s.base);
    let p = b.get(&authorize_url(&ed.client_id, Some(&challenge), &[]));
    b.get(p.location.as_deref().unwrap());
    let p = b.post("/portal/login", &[("login", "ada"), ("password", PW)]);
    assert_eq!(p.location.as_deref(), Some("/portal/enroll"), "{}", p.body);
    let page = b.get("/portal/enroll");
    let marker = "<code class=\"secret\">";
    let start_at = page.body.find(marker).expect("the secret is shown") + marker.len();
    let b32 = page.body[start_at..start_at + page.body[start_at..].find('<').unwrap()].to_string();
    let secret = totp_rs::Secret::Encoded(b32).to_bytes().unwrap();
    let code = cairn_directory::totp_code(&secret, chrono::Utc::now());
    let p = b.post("/portal/enroll", &[("code", &code)]);
    let next = continue_link(&p.body).unwrap_or_else(|| panic!("{} {}", p.status, p.body));
    let p = b.get(&next);
    let back = p.location.unwrap();
    let code = param(&back, "code").expect("a code after enrolment");
    let (st, t) = redeem(&s, &ed, &code, &verifier);
    assert_eq!(st, 200, "{t}");
    let old = t["id_token"].as_str().unwrap().to_string();
    assert_eq!(jsonwebtoken::decode_header(&old).unwrap().alg, jsonwebtoken::Algorithm::EdDSA);
    verify_id_token(&s, &old, &ed.client_id);
    let old_kid = jsonwebtoken::decode_header(&old).unwrap().kid.unwrap();

    // Rotation: the new key is published at once and signs later; the old one stays.
    let (st, r) = s.post("/api/v2/oidc/keys/rotate", json!({}));
    assert_eq!(st, 200, "{r}");
    let (_, jwks) = s.get("/oidc/jwks");
    assert_eq!(jwks["keys"].as_array().unwrap().len(), 4, "{jwks}");
    std::fs::write(&clock, "1000").unwrap();
    // A new sign-in (fresh browser: the TOTP step with the enrolled authenticator).
    let mut b2 = Browser::new(&s.base);
    let now = || cairn_directory::totp_code(&secret, chrono::Utc::now() + chrono::Duration::seconds(1000));
    let back = sign_in(&mut b2, &authorize_url(&ed.client_id, Some(&challenge), &[]), "ada", Some(&now));
    let code = param(&back, "code").unwrap();
    let (_, t2) = redeem(&s, &ed, &code, &verifier);
    let new_kid = jsonwebtoken::decode_header(t2["id_token"].as_str().unwrap()).unwrap().kid.unwrap();
    assert_ne!(new_kid, old_kid, "the new key signs after its publication period");
    // The old ID token still verifies against the published keys.
    let claims = verify_id_token(&s, &old, &ed.client_id);
    assert_eq!(claims["sub"].as_str(), Some(ada.as_str()));
    // A TOTP code is good once: the same code again does not sign in.
    let mut b3 = Browser::new(&s.base);
    let p = b3.get(&authorize_url(&ed.client_id, Some(&challenge), &[]));
    b3.get(p.location.as_deref().unwrap());
    b3.post("/portal/login", &[("login", "ada"), ("password", PW)]);
    b3.get("/portal/totp");
    let p = b3.post("/portal/totp", &[("code", &now())]);
    assert_eq!(p.status, 401, "a replayed code");
}

#[test]
fn second_factor_for_an_application_and_key_rotation_keep_id_tokens_verifiable() {
    for db in Db::all("oidc totp and keys on PostgreSQL") {
        totp_and_keys(&db);
    }
}

fn races(db: &Db) {
    let s = start(db, None);
    let wiki = app(&s, json!({"name": "Wiki", "redirectUris": [REDIRECT]}));
    let ada = user(&s, "ada");
    associate(&s, &wiki, "user", &ada);
    let (verifier, challenge) = pkce();
    let mut b = Browser::new(&s.base);
    let back = sign_in(&mut b, &authorize_url(&wiki.client_id, Some(&challenge), &[]), "ada", None);
    let code = param(&back, "code").unwrap();
    // Eight redemptions of one code at once: one answer with tokens, and since the code was
    // presented again, even those are revoked.
    let results: Vec<(u16, Value)> = std::thread::scope(|sc| {
        let hs: Vec<_> = (0..8).map(|_| sc.spawn(|| redeem(&s, &wiki, &code, &verifier))).collect();
        hs.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let ok: Vec<&Value> = results.iter().filter(|(st, _)| *st == 200).map(|(_, v)| v).collect();
    assert_eq!(ok.len(), 1, "{results:?}");
    assert!(results.iter().filter(|(st, _)| *st != 200).all(|(st, v)| *st == 400 && v["error"] == "invalid_grant"));
    assert_eq!(introspect(&s, &wiki, ok[0]["access_token"].as_str().unwrap())["active"], false);
    // Eight refreshes of one refresh token at once: at most one wins, and the reuse revokes
    // the family, the winner's new tokens included.
    let back = sign_in(&mut b, &authorize_url(&wiki.client_id, Some(&challenge), &[]), "ada", None);
    let code = param(&back, "code").unwrap();
    let (_, t) = redeem(&s, &wiki, &code, &verifier);
    let rt = t["refresh_token"].as_str().unwrap().to_string();
    let results: Vec<(u16, Value)> = std::thread::scope(|sc| {
        let hs: Vec<_> = (0..8).map(|_| sc.spawn(|| refresh_grant(&s, &wiki, &rt))).collect();
        hs.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let ok: Vec<&Value> = results.iter().filter(|(st, _)| *st == 200).map(|(_, v)| v).collect();
    assert!(ok.len() <= 1, "{results:?}");
    for v in ok {
        assert_eq!(introspect(&s, &wiki, v["access_token"].as_str().unwrap())["active"], false);
    }
    // A suspension racing a refresh never leaves a live token behind.
    let back = sign_in(&mut b, &authorize_url(&wiki.client_id, Some(&challenge), &[]), "ada", None);
    let code = param(&back, "code").unwrap();
    let (_, t) = redeem(&s, &wiki, &code, &verifier);
    let rt = t["refresh_token"].as_str().unwrap().to_string();
    let refreshed = std::thread::scope(|sc| {
        let h = sc.spawn(|| refresh_grant(&s, &wiki, &rt));
        let (st, _) = s.post(&format!("/api/systemusers/{ada}/state/suspend"), json!({}));
        assert_eq!(st, 200);
        h.join().unwrap()
    });
    if refreshed.0 == 200 {
        assert_eq!(introspect(&s, &wiki, refreshed.1["access_token"].as_str().unwrap())["active"], false);
        let (st, _) = token(
            &s,
            &wiki,
            &[("grant_type", "refresh_token"), ("refresh_token", refreshed.1["refresh_token"].as_str().unwrap())],
        );
        assert_eq!(st, 400);
    }
}

#[test]
fn concurrent_redemptions_and_refreshes_give_at_most_one_answer() {
    for db in Db::all("oidc races on PostgreSQL") {
        races(&db);
    }
}
