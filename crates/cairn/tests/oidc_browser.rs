//! End-to-end: a real relying party (the `openidconnect` crate) with a real browser (headless
//! Chromium through chromedriver) signs a person in through Cairn's portal — discovery, the
//! code flow with PKCE, the ID token verified against the JWKS, userinfo, refresh — then the
//! person is suspended, and neither the refresh nor a new sign-in works. On SQLite and (with
//! CAIRN_TEST_DATABASE_URL) PostgreSQL.

mod common;

use std::time::{Duration, Instant};

use common::chrome::{browser, chromedriver, css};
use common::{Db, Server, KEY};
use fantoccini::Client;
use openidconnect::core::{
    CoreAuthenticationFlow, CoreClient, CoreJwsSigningAlgorithm, CoreProviderMetadata, CoreUserInfoClaims,
};
use openidconnect::{
    AuthorizationCode, ClientId, ClientSecret, CsrfToken, IssuerUrl, Nonce, OAuth2TokenResponse, PkceCodeChallenge,
    RedirectUrl, Scope, TokenResponse,
};
use serde_json::{json, Value};

const PW: &str = "lantern orchard seventeen";
const REDIRECT: &str = "http://127.0.0.1:9/cb";

fn http() -> openidconnect::reqwest::blocking::Client {
    // OIDC clients must not follow redirects (SSRF); the provider answers without them.
    openidconnect::reqwest::blocking::ClientBuilder::new()
        .redirect(openidconnect::reqwest::redirect::Policy::none())
        .build()
        .unwrap()
}

/// Waits for the browser to land at the relying party's redirect URI; returns that URL.
async fn landed(c: &Client) -> String {
    let start = Instant::now();
    loop {
        let u = c.current_url().await.map(|u| u.to_string()).unwrap_or_default();
        if u.starts_with(REDIRECT) {
            return u;
        }
        if start.elapsed() > Duration::from_secs(20) {
            let body = c.source().await.unwrap_or_default();
            panic!("never came back to the application; at {u}:\n{body}");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn sign_in(c: &Client, url: &str, login: &str) -> String {
    c.goto(url).await.unwrap();
    css(c, "#login").await.send_keys(login).await.unwrap();
    css(c, "#password").await.send_keys(PW).await.unwrap();
    css(c, "button[type=submit]").await.click().await.unwrap();
    landed(c).await
}

fn param(url: &str, k: &str) -> Option<String> {
    openidconnect::url::Url::parse(url).unwrap().query_pairs().find(|(n, _)| n == k).map(|(_, v)| v.into_owned())
}

fn run(db: &Db, driver_port: u16) {
    let s = Server::start_with(db, &[("CAIRN_BOOTSTRAP_API_KEY", KEY), ("CAIRN_BASE_URL", "{base}")]);
    let (st, a) =
        s.post("/api/applications", json!({"name": "Wiki", "sso": {"type": "oidc"}, "redirectUris": [REDIRECT]}));
    assert_eq!(st, 201, "{a}");
    let (_, ada) = s.post("/api/systemusers", json!({"username": "ada", "email": "ada@example.com", "password": PW}));
    let (_, bob) = s.post("/api/systemusers", json!({"username": "bob", "email": "bob@example.com", "password": PW}));
    let ada = ada["_id"].as_str().unwrap().to_string();
    assert!(bob["_id"].is_string());
    let (_, g) = s.post("/api/v2/usergroups", json!({"name": "wiki-users"}));
    let gid = g["id"].as_str().unwrap();
    s.post(&format!("/api/v2/usergroups/{gid}/members"), json!({"op": "add", "type": "user", "id": ada}));
    let (st, _) = s.post(
        &format!("/api/v2/applications/{}/associations", a["_id"].as_str().unwrap()),
        json!({"op": "add", "type": "user_group", "id": gid}),
    );
    assert_eq!(st, 204);

    // The relying party configures itself from the discovery document alone.
    let http = http();
    let meta = CoreProviderMetadata::discover(&IssuerUrl::new(s.base.clone()).unwrap(), &http).expect("discovery");
    let client = CoreClient::from_provider_metadata(
        meta,
        ClientId::new(a["clientId"].as_str().unwrap().into()),
        Some(ClientSecret::new(a["clientSecret"].as_str().unwrap().into())),
    )
    .set_redirect_uri(RedirectUrl::new(REDIRECT.into()).unwrap());
    let (challenge, verifier) = PkceCodeChallenge::new_random_sha256();
    let (url, csrf, nonce) = client
        .authorize_url(CoreAuthenticationFlow::AuthorizationCode, CsrfToken::new_random, Nonce::new_random)
        .add_scope(Scope::new("email".into()))
        .add_scope(Scope::new("profile".into()))
        .set_pkce_challenge(challenge)
        .url();

    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build().unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let c = rt.block_on(browser(driver_port, &tmp.path().join("profile"), tmp.path()));
    let back = rt.block_on(sign_in(&c, url.as_str(), "ada"));
    assert_eq!(param(&back, "state").as_deref(), Some(csrf.secret().as_str()));
    let code = param(&back, "code").expect("a code");

    let tokens = client
        .exchange_code(AuthorizationCode::new(code))
        .unwrap()
        .set_pkce_verifier(verifier)
        .request(&http)
        .expect("the code is exchanged");
    let id_token = tokens.id_token().expect("an ID token");
    let claims = id_token.claims(&client.id_token_verifier(), &nonce).expect("the ID token verifies against the JWKS");
    assert_eq!(claims.subject().as_str(), ada);
    assert_eq!(claims.email().map(|e| e.as_str()), Some("ada@example.com"));
    assert_eq!(claims.issuer().as_str(), s.base);
    let info: CoreUserInfoClaims =
        client.user_info(tokens.access_token().clone(), None).unwrap().request(&http).expect("userinfo");
    assert_eq!(info.subject().as_str(), ada);
    let refreshed = client
        .exchange_refresh_token(tokens.refresh_token().expect("a refresh token"))
        .unwrap()
        .request(&http)
        .expect("the refresh works");
    let rt2 = refreshed.refresh_token().expect("a new refresh token").clone();

    // Key rotation: the ID token signed before still verifies with the JWKS after it.
    let (st, _) = s.post("/api/v2/oidc/keys/rotate", json!({}));
    assert_eq!(st, 200);
    let meta = CoreProviderMetadata::discover(&IssuerUrl::new(s.base.clone()).unwrap(), &http).unwrap();
    assert_eq!(meta.jwks().keys().len(), 4);
    let fresh = CoreClient::from_provider_metadata(meta, ClientId::new(a["clientId"].as_str().unwrap().into()), None);
    id_token.claims(&fresh.id_token_verifier(), &nonce).expect("the old ID token still verifies");
    let ed = fresh.id_token_verifier().set_allowed_algs(vec![CoreJwsSigningAlgorithm::EdDsa]);
    assert!(id_token.claims(&ed, &nonce).is_err(), "the algorithm is the server's, not the token's");

    // Suspension: the refresh is refused, introspection says inactive, no new sign-in.
    let (st, _) = s.post(&format!("/api/systemusers/{ada}/state/suspend"), json!({}));
    assert_eq!(st, 200);
    let err = client.exchange_refresh_token(&rt2).unwrap().request(&http).expect_err("refused after suspension");
    assert!(format!("{err:?}").contains("invalid_grant"), "{err:?}");
    let i: Value = s
        .raw()
        .post(format!("{}/oidc/introspect", s.base))
        .basic_auth(a["clientId"].as_str().unwrap(), a["clientSecret"].as_str())
        .form(&[("token", refreshed.access_token().secret().as_str())])
        .send()
        .unwrap()
        .json()
        .unwrap();
    assert_eq!(i["active"], false, "{i}");
    let (url2, _, _) = client
        .authorize_url(CoreAuthenticationFlow::AuthorizationCode, CsrfToken::new_random, Nonce::new_random)
        .set_pkce_challenge(PkceCodeChallenge::new_random_sha256().0)
        .url();
    let back = rt.block_on(sign_in(&c, url2.as_str(), "ada"));
    assert_eq!(param(&back, "error").as_deref(), Some("access_denied"), "{back}");
    assert_eq!(param(&back, "code"), None);

    // Someone not associated with the application: access_denied, never a code.
    rt.block_on(c.delete_all_cookies()).unwrap();
    let back = rt.block_on(sign_in(&c, url2.as_str(), "bob"));
    assert_eq!(param(&back, "error").as_deref(), Some("access_denied"), "{back}");

    // A redirect URI the application did not register: an error page at Cairn, no redirect.
    let evil = url2.as_str().replace("http%3A%2F%2F127.0.0.1%3A9%2Fcb", "https%3A%2F%2Fevil.example%2Fcb");
    rt.block_on(async {
        c.goto(&evil).await.unwrap();
        let text = css(&c, "h1").await.text().await.unwrap();
        assert_eq!(text, "This sign-in request is not valid");
        assert!(c.current_url().await.unwrap().as_str().starts_with(&s.base));
    });
    rt.block_on(c.close()).unwrap();
}

#[test]
fn a_relying_party_signs_a_person_in_through_the_portal_in_a_browser() {
    let Some(driver) = chromedriver() else { return };
    for db in Db::all("oidc browser on PostgreSQL") {
        run(&db, driver.port);
    }
}
