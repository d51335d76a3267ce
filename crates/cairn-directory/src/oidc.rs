//! The OpenID Connect provider's use cases (the `cairn-oidc` front end speaks the protocol):
//! signing keys, authorization codes, tokens, and who may still use them.
//!
//! ```text
//!  sign-in (authenticate, protocol oidc, the app as resource) ─▶ code (60 s, single use)
//!  code + PKCE verifier ─▶ access token (short) + refresh token + ID token   } one family
//!  refresh token ─▶ new access + new refresh (the old one is spent)           }
//!  a spent code or refresh token presented again ─▶ the whole family is revoked
//!  suspension, lock, password change, deletion, loss of the grant ─▶ the user's tokens go
//! ```
//! Every token is random and stored as its SHA-256; only the ID token is a JWT (RS256 or
//! EdDSA, the application's choice; never `none`). Access tokens are checked against the
//! user's current state and grant whenever they are read (userinfo, introspection), so the
//! access decision holds even between a change and its revocation.
//!
//! Keys: one per algorithm signs; a rotation publishes the new key at once and lets it sign
//! only [`PUBLISH_AHEAD`] later (relying parties fetch the JWKS first), and keeps the old one
//! published until the tokens it signed have expired. Private keys are sealed with the
//! data-dir key.

use std::sync::Arc;
use std::time::Instant;

use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64URL;
use base64::Engine;
use cairn_domain::access::{decide, verdict, AccessRequest, Denial, Protocol, Verdict};
use cairn_domain::application::{Application, CODE_VALIDITY, MAX_FAMILIES, REFRESH_VALIDITY};
use cairn_domain::lockout::LockPolicy;
use cairn_domain::{Actor, Secret, Session, User};
use cairn_store::{Db, OidcGrant, OidcKey};
use chrono::{DateTime, Duration, Utc};
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde_json::{json, Value};
use sha2::{Digest, Sha256};

use crate::applications::app_ref;
use crate::error::{Error, Result};
use crate::tokens::{random_token, token_hash};
use crate::{Ctx, Directory};

/// How long an ID token is valid (and so how long a retired key stays published).
pub const ID_TOKEN_VALIDITY: Duration = Duration::hours(1);
/// How long a new key is published before it signs.
pub const PUBLISH_AHEAD: Duration = Duration::minutes(15);
/// How long a process trusts its copy of the keys before reading them again (other
/// processes of a cluster may have rotated; a new key is published long before it signs).
const KEY_CACHE_SECONDS: u64 = 30;
/// The algorithms the provider signs with, by their JOSE names.
pub const ALGORITHMS: &[&str] = &["RS256", "EdDSA"];

/// A signing key, opened.
pub(crate) struct LoadedKey {
    kid: String,
    alg: Algorithm,
    enc: EncodingKey,
    dec: DecodingKey,
    jwk: Value,
    activates: DateTime<Utc>,
    retires: Option<DateTime<Utc>>,
}

pub(crate) struct KeyCache {
    read: Instant,
    keys: Vec<Arc<LoadedKey>>,
}

fn alg_of(name: &str) -> Option<Algorithm> {
    match name {
        "RS256" => Some(Algorithm::RS256),
        "EdDSA" => Some(Algorithm::EdDSA),
        _ => None,
    }
}

/// Why a token request is refused: RFC 6749 §5.2's `error` and a description for the client.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OidcRefusal {
    pub error: &'static str,
    pub description: String,
}

fn refuse(error: &'static str, description: impl Into<String>) -> OidcRefusal {
    OidcRefusal { error, description: description.into() }
}

/// What the token endpoint answers.
#[derive(Debug)]
pub struct IssuedTokens {
    pub access_token: Secret,
    pub expires_in: i64,
    pub refresh_token: Option<Secret>,
    pub id_token: String,
    pub scope: String,
}

/// A valid authorization request, as the front end read it.
#[derive(Debug, Clone)]
pub struct CodeRequest {
    pub redirect_uri: String,
    pub scope: Vec<String>,
    pub nonce: Option<String>,
    pub code_challenge: Option<String>,
}

/// Whether a signed-in person may have a code now.
#[derive(Debug)]
pub enum SessionAccess {
    Allow(Box<User>),
    /// The session is not enough (a second factor or a change is due): sign in again.
    Login,
    Deny(Denial),
}

/// What an access token is, for userinfo and introspection.
#[derive(Debug)]
pub struct TokenInfo {
    pub user: User,
    pub application: Application,
    pub scope: String,
    pub kind: String,
    pub issued: DateTime<Utc>,
    pub expires: DateTime<Utc>,
}

/// RFC 7636 S256: BASE64URL(SHA256(verifier)) compared in constant time with the challenge.
pub fn pkce_matches(verifier: &str, challenge: &str) -> bool {
    use subtle::ConstantTimeEq;
    let computed = B64URL.encode(Sha256::digest(verifier.as_bytes()));
    bool::from(computed.as_bytes().ct_eq(challenge.as_bytes()))
}

/// A PKCE verifier or challenge: 43 to 128 unreserved characters (RFC 7636 §4.1).
pub fn pkce_well_formed(s: &str) -> bool {
    (43..=128).contains(&s.len()) && s.bytes().all(|b| b.is_ascii_alphanumeric() || b"-._~".contains(&b))
}

fn actor_of(u: &User) -> Actor {
    Actor { kind: "user".into(), id: Some(u.id.clone()), name: Some(u.username.clone()) }
}

fn app_detail(app: &Application) -> Value {
    json!({ "application_id": app.id, "application_name": app.name, "client_id": app.client_id })
}

fn new_family() -> String {
    random_token()
}

impl Directory {
    // ---- keys ---------------------------------------------------------------------------------

    fn open_key(&self, k: &OidcKey) -> Result<LoadedKey> {
        let alg = alg_of(&k.alg).ok_or_else(|| Error::Internal(format!("stored key of unknown alg {}", k.alg)))?;
        let der = crate::secretbox::open(self.secret_key()?, &k.sealed)?;
        let jwk: Value =
            serde_json::from_str(&k.public_jwk).map_err(|e| Error::Internal(format!("stored JWK: {e}")))?;
        let text = |f: &str| jwk[f].as_str().unwrap_or_default().to_string();
        let (enc, dec) = match alg {
            Algorithm::RS256 => (
                EncodingKey::from_rsa_der(&der),
                DecodingKey::from_rsa_components(&text("n"), &text("e"))
                    .map_err(|e| Error::Internal(format!("stored RSA key: {e}")))?,
            ),
            _ => (
                EncodingKey::from_ed_der(&der),
                DecodingKey::from_ed_components(&text("x")).map_err(|e| Error::Internal(format!("stored key: {e}")))?,
            ),
        };
        Ok(LoadedKey { kid: k.kid.clone(), alg, enc, dec, jwk, activates: k.activates, retires: k.retires })
    }

    fn new_key(&self, alg: &str, now: DateTime<Utc>, activates: DateTime<Utc>) -> Result<OidcKey> {
        let mut kid = [0u8; 12];
        rand::RngCore::fill_bytes(&mut rand::thread_rng(), &mut kid);
        let kid = B64URL.encode(kid);
        let (der, jwk) = match alg {
            "RS256" => {
                use rsa::pkcs1::EncodeRsaPrivateKey;
                use rsa::traits::PublicKeyParts;
                let k = rsa::RsaPrivateKey::new(&mut rand::thread_rng(), 2048)
                    .map_err(|e| Error::Internal(format!("RSA key generation: {e}")))?;
                let der = k.to_pkcs1_der().map_err(|e| Error::Internal(format!("RSA key encoding: {e}")))?;
                let jwk = json!({ "kty": "RSA", "use": "sig", "alg": "RS256", "kid": kid,
                    "n": B64URL.encode(k.n().to_bytes_be()), "e": B64URL.encode(k.e().to_bytes_be()) });
                (der.as_bytes().to_vec(), jwk)
            }
            _ => {
                use ring::signature::KeyPair;
                let rng = ring::rand::SystemRandom::new();
                let doc = ring::signature::Ed25519KeyPair::generate_pkcs8(&rng)
                    .map_err(|_| Error::Internal("Ed25519 key generation failed".into()))?;
                let pair = ring::signature::Ed25519KeyPair::from_pkcs8(doc.as_ref())
                    .map_err(|_| Error::Internal("Ed25519 key generation failed".into()))?;
                let jwk = json!({ "kty": "OKP", "crv": "Ed25519", "use": "sig", "alg": "EdDSA", "kid": kid,
                    "x": B64URL.encode(pair.public_key().as_ref()) });
                (doc.as_ref().to_vec(), jwk)
            }
        };
        Ok(OidcKey {
            kid,
            alg: alg.to_string(),
            sealed: crate::secretbox::seal(self.secret_key()?, &der),
            public_jwk: jwk.to_string(),
            created: now,
            activates,
            retires: None,
        })
    }

    /// The keys, read again when the copy is old (or `fresh`); the first call makes one key
    /// of each algorithm.
    async fn keys(&self, fresh: bool) -> Result<Vec<Arc<LoadedKey>>> {
        if !fresh {
            let cache = self.inner.oidc_keys.lock().expect("keys");
            if let Some(c) = cache.as_ref().filter(|c| c.read.elapsed().as_secs() < KEY_CACHE_SECONDS) {
                return Ok(c.keys.clone());
            }
        }
        let now = self.now();
        let mut stored = {
            let mut c = self.store().read().await?;
            c.db().oidc_keys().await?
        };
        if ALGORITHMS.iter().any(|a| !stored.iter().any(|k| &k.alg == a)) {
            // Key generation (RSA: tens of milliseconds) runs outside the async threads.
            let mut tx = self.store().begin().await?;
            tx.db().lock_oidc_keys().await?;
            stored = tx.db().oidc_keys().await?;
            let missing: Vec<&str> =
                ALGORITHMS.iter().copied().filter(|a| !stored.iter().any(|k| k.alg == *a)).collect();
            for alg in missing {
                let d = self.clone();
                let alg = alg.to_string();
                let k = tokio::task::spawn_blocking(move || d.new_key(&alg, now, now))
                    .await
                    .map_err(|e| Error::Internal(e.to_string()))??;
                tx.db().insert_oidc_key(&k).await?;
                stored.push(k);
            }
            tx.commit().await?;
        }
        let keys: Vec<Arc<LoadedKey>> = stored
            .iter()
            .filter(|k| k.retires.is_none_or(|r| r > now))
            .map(|k| self.open_key(k).map(Arc::new))
            .collect::<Result<_>>()?;
        *self.inner.oidc_keys.lock().expect("keys") = Some(KeyCache { read: Instant::now(), keys: keys.clone() });
        Ok(keys)
    }

    /// The JWKS document: every published key.
    pub async fn oidc_jwks(&self) -> Result<Value> {
        let now = self.now();
        let keys = self.keys(false).await?;
        let published: Vec<Value> =
            keys.iter().filter(|k| k.retires.is_none_or(|r| r > now)).map(|k| k.jwk.clone()).collect();
        Ok(json!({ "keys": published }))
    }

    /// Makes a new key of each algorithm, published now and signing [`PUBLISH_AHEAD`] from now;
    /// the keys it replaces stay published until what they signed has expired. The new keys'
    /// ids.
    pub async fn rotate_oidc_keys(&self, ctx: &Ctx) -> Result<Vec<String>> {
        self.keys(true).await?;
        let now = self.now();
        let activates = now + PUBLISH_AHEAD;
        let keep = ID_TOKEN_VALIDITY.max(self.config().oidc_access_ttl);
        let mut made = vec![];
        for alg in ALGORITHMS {
            let d = self.clone();
            let a = alg.to_string();
            let k = tokio::task::spawn_blocking(move || d.new_key(&a, now, activates))
                .await
                .map_err(|e| Error::Internal(e.to_string()))??;
            made.push(k);
        }
        let mut tx = self.store().begin().await?;
        tx.db().lock_oidc_keys().await?;
        tx.db().drop_retired_oidc_keys(now).await?;
        for k in &made {
            tx.db().insert_oidc_key(k).await?;
            tx.db().retire_oidc_keys(&k.alg, &k.kid, activates + keep).await?;
        }
        let kids: Vec<String> = made.iter().map(|k| k.kid.clone()).collect();
        let detail = json!({ "new_keys": kids, "signing_from": cairn_domain::user::format_time(activates) });
        let ev = self.event(ctx, "oidc_keys_rotate", None, vec![], detail);
        tx.db().insert_event(&ev).await?;
        tx.commit().await?;
        self.keys(true).await?;
        Ok(kids)
    }

    /// Signs `claims` with the key of `alg` that signs now.
    pub async fn oidc_sign(&self, alg: &str, claims: &Value) -> Result<String> {
        let now = self.now();
        let want = alg_of(alg).ok_or_else(|| Error::Internal(format!("unknown signing algorithm {alg}")))?;
        let keys = self.keys(false).await?;
        let key = keys
            .iter()
            .filter(|k| k.alg == want && k.activates <= now)
            .max_by_key(|k| k.activates)
            .ok_or_else(|| Error::Internal(format!("no {alg} key signs yet")))?;
        let mut h = Header::new(want);
        h.kid = Some(key.kid.clone());
        jsonwebtoken::encode(&h, claims, &key.enc).map_err(|e| Error::Internal(format!("signing: {e}")))
    }

    /// The claims of an ID token this provider signed (any published key; expiry not
    /// checked: RP-initiated logout accepts an expired hint), if it is one.
    pub async fn oidc_id_token_claims(&self, token: &str) -> Result<Option<Value>> {
        let Ok(header) = jsonwebtoken::decode_header(token) else { return Ok(None) };
        let keys = self.keys(false).await?;
        let Some(key) = keys.iter().find(|k| Some(&k.kid) == header.kid.as_ref() && k.alg == header.alg) else {
            return Ok(None);
        };
        let mut v = Validation::new(key.alg);
        v.validate_exp = false;
        v.validate_aud = false;
        v.required_spec_claims.clear();
        v.set_issuer(&[self.config().issuer()]);
        Ok(jsonwebtoken::decode::<Value>(token, &key.dec, &v).ok().map(|d| d.claims))
    }

    // ---- access --------------------------------------------------------------------------------

    /// The access decision for a user and an application now, without a password: state,
    /// password status, lock, grant (and the application active). For tokens already issued.
    /// `lock`: in a transaction that writes tokens, the user's row is locked, so a suspension
    /// or password change running at the same time either waits for the tokens (and ends
    /// them) or is seen here.
    async fn live_access(
        &self,
        db: &mut Db<'_>,
        user_id: &str,
        app: &Application,
        lock: bool,
    ) -> Result<std::result::Result<User, Denial>> {
        let found = if lock { db.lock_user(user_id).await? } else { db.get_user(user_id).await? };
        let Some(u) = found else { return Ok(Err(Denial::NotActive)) };
        let org = crate::org_of(db).await?;
        let now = self.now();
        let granted = app.settings.active && crate::grants::granted_in(db, &u.id, &app_ref(&app.id)).await?;
        let r = AccessRequest {
            state: u.state,
            password: u.password_status(),
            delegated: u.profile.get("delegatedAuthority").is_some_and(|v| !v.is_null()),
            locked: u.lockout().is_locked(&LockPolicy::from(&org.settings.password_policy), now),
            mfa_required: false,
            mfa_presented: false,
            granted,
        };
        Ok(decide(&r).map(|_| u))
    }

    /// Whether the person of a portal session may have a code for `app` without signing in
    /// again: the access decision with the session's second factor. A second factor the
    /// application or the user requires and the session lacks means signing in again.
    pub async fn oidc_session_access(&self, session: &Session, app: &Application) -> Result<SessionAccess> {
        let mut c = self.store().read().await?;
        let db = &mut c.db();
        let Some(u) = db.get_user(&session.user_id).await? else { return Ok(SessionAccess::Deny(Denial::NotActive)) };
        let org = crate::org_of(db).await?;
        let now = self.now();
        let granted = app.settings.active && crate::grants::granted_in(db, &u.id, &app_ref(&app.id)).await?;
        let mfa_required = (u.flag("enable_user_portal_multifactor") || app.settings.require_mfa)
            && u.mfa_excluded_until(DateTime::<Utc>::MIN_UTC).is_none_or(|t| t <= now);
        let r = AccessRequest {
            state: u.state,
            password: u.password_status(),
            delegated: u.profile.get("delegatedAuthority").is_some_and(|v| !v.is_null()),
            locked: u.lockout().is_locked(&LockPolicy::from(&org.settings.password_policy), now),
            mfa_required: mfa_required || u.totp_enabled,
            mfa_presented: session.data.get("mfa").and_then(Value::as_bool).unwrap_or(false),
            granted,
        };
        Ok(match verdict(&r, Protocol::Oidc, u.totp_enabled) {
            Verdict::Allow => SessionAccess::Allow(Box::new(u)),
            Verdict::Step(_) => SessionAccess::Login,
            Verdict::Deny(d) => SessionAccess::Deny(d),
        })
    }

    /// When the session's person signed in (the portal session's start, or what it recorded).
    pub fn oidc_auth_time(session: &Session) -> DateTime<Utc> {
        session
            .data
            .get("auth_time")
            .and_then(Value::as_i64)
            .and_then(|t| DateTime::from_timestamp(t, 0))
            .unwrap_or(session.created)
    }

    /// Records a refused authorization of a signed-in person (`access_denied`).
    pub async fn oidc_authorize_denied(&self, ctx: &Ctx, app: &Application, user_id: &str, why: &str) -> Result<()> {
        let mut tx = self.store().begin().await?;
        let u = tx.db().get_user(user_id).await?;
        let mut detail = app_detail(app);
        detail["reason"] = json!(why);
        let ctx = match &u {
            Some(u) => Ctx { actor: actor_of(u), ..ctx.clone() },
            None => ctx.clone(),
        };
        let target = u.as_ref().map(|u| ("user", u.id.as_str(), u.username.as_str()));
        let mut ev = self.event(&ctx, "oidc_authorize", target, vec![], detail);
        ev.outcome = "failure".into();
        tx.db().insert_event(&ev).await?;
        tx.commit().await?;
        Ok(())
    }

    /// Issues an authorization code for a person whose access was just decided; one event.
    pub async fn oidc_issue_code(
        &self,
        ctx: &Ctx,
        app: &Application,
        user: &User,
        req: &CodeRequest,
        auth_time: DateTime<Utc>,
    ) -> Result<String> {
        let code = random_token();
        let now = self.now();
        let g = OidcGrant {
            hash: token_hash(&code),
            kind: "code".into(),
            family: new_family(),
            app_id: app.id.clone(),
            user_id: user.id.clone(),
            data: json!({
                "redirect_uri": req.redirect_uri, "scope": req.scope.join(" "), "nonce": req.nonce,
                "code_challenge": req.code_challenge, "auth_time": auth_time.timestamp(),
            }),
            created: now,
            expires: now + CODE_VALIDITY,
            used: None,
        };
        let mut tx = self.store().begin().await?;
        tx.db().put_oidc_code(&g, now).await?;
        let mut detail = app_detail(app);
        detail["scope"] = json!(req.scope.join(" "));
        detail["pkce"] = json!(req.code_challenge.is_some());
        let ctx = Ctx { actor: actor_of(user), ..ctx.clone() };
        let ev = self.event(&ctx, "oidc_authorize", Some(("user", &user.id, &user.username)), vec![], detail);
        tx.db().insert_event(&ev).await?;
        tx.commit().await?;
        Ok(code)
    }

    // ---- tokens --------------------------------------------------------------------------------

    /// A refused token request of an authenticated client about a grant that exists: one
    /// failure event (unknown codes and tokens write none: anyone can make those up).
    fn token_failure_event(
        &self,
        ctx: &Ctx,
        app: &Application,
        user: Option<&User>,
        action: &str,
        why: &str,
        extra: Value,
    ) -> cairn_domain::Event {
        let mut detail = app_detail(app);
        detail["reason"] = json!(why);
        if let (Value::Object(d), Value::Object(x)) = (&mut detail, extra) {
            d.extend(x);
        }
        let ctx = Ctx { actor: crate::auth::application_actor(app), ..ctx.clone() };
        let target = user.map(|u| ("user", u.id.as_str(), u.username.as_str()));
        let mut ev = self.event(&ctx, action, target, vec![], detail);
        ev.outcome = "failure".into();
        ev
    }

    /// Ends a refused token request: its failure event written, the transaction committed
    /// (what it revoked stays revoked), the refusal answered.
    async fn refused(
        &self,
        mut tx: cairn_store::Tx,
        ev: cairn_domain::Event,
        r: OidcRefusal,
    ) -> Result<std::result::Result<IssuedTokens, OidcRefusal>> {
        tx.db().insert_event(&ev).await?;
        tx.commit().await?;
        Ok(Err(r))
    }

    /// Counts an unknown code or token against the client's address (the sign-in throttle).
    fn unknown_grant(&self, ctx: &Ctx) -> OidcRefusal {
        if let Some(a) = ctx.client_addr.as_deref().and_then(crate::auth::address_key) {
            self.inner.sign_in_throttle.lock().expect("throttle").take(&a, self.now());
        }
        refuse("invalid_grant", "the code or token is not valid (unknown, expired or revoked)")
    }

    fn throttled(&self, ctx: &Ctx) -> bool {
        match ctx.client_addr.as_deref().and_then(crate::auth::address_key) {
            Some(a) => !self.inner.sign_in_throttle.lock().expect("throttle").allows(&a, self.now()),
            None => false,
        }
    }

    #[allow(clippy::too_many_arguments)]
    async fn mint(
        &self,
        db: &mut Db<'_>,
        app: &Application,
        user: &User,
        family: &str,
        scope: &str,
        auth_time: i64,
        nonce: Option<&str>,
        refresh: bool,
    ) -> Result<IssuedTokens> {
        let now = self.now();
        let ttl = self.config().oidc_access_ttl;
        let access = random_token();
        let data = json!({ "scope": scope, "auth_time": auth_time });
        let grant = |kind: &str, hash: String, expires| OidcGrant {
            hash,
            kind: kind.into(),
            family: family.to_string(),
            app_id: app.id.clone(),
            user_id: user.id.clone(),
            data: data.clone(),
            created: now,
            expires,
            used: None,
        };
        db.put_oidc_token(&grant("access", token_hash(&access), now + ttl), now).await?;
        let refresh_token = if refresh && app.allows_grant("refresh_token") {
            let r = random_token();
            db.put_oidc_token(&grant("refresh", token_hash(&r), now + REFRESH_VALIDITY), now).await?;
            Some(Secret::new(r))
        } else {
            None
        };
        let groups = if scope.split(' ').any(|s| s == "groups") {
            db.groups_of_user(&user.id).await?.into_iter().map(|g| g.name).collect()
        } else {
            vec![]
        };
        let mut claims = self.user_claims(user, scope, &groups);
        let c = claims.as_object_mut().expect("claims are an object");
        c.insert("iss".into(), json!(self.config().issuer()));
        c.insert("aud".into(), json!(app.client_id));
        c.insert("azp".into(), json!(app.client_id));
        c.insert("iat".into(), json!(now.timestamp()));
        c.insert("exp".into(), json!((now + ID_TOKEN_VALIDITY).timestamp()));
        c.insert("auth_time".into(), json!(auth_time));
        if let Some(n) = nonce {
            c.insert("nonce".into(), json!(n));
        }
        // at_hash (OIDC Core §3.1.3.6): the left half of the access token's hash.
        let digest = Sha256::digest(access.as_bytes());
        c.insert("at_hash".into(), json!(B64URL.encode(&digest[..16])));
        let id_token = self.oidc_sign(&app.settings.id_token_signed_response_alg, &claims).await?;
        Ok(IssuedTokens {
            access_token: Secret::new(access),
            expires_in: ttl.num_seconds(),
            refresh_token,
            id_token,
            scope: scope.to_string(),
        })
    }

    /// The claims of the requested scopes: `sub` always; profile, email and groups when asked.
    pub fn user_claims(&self, u: &User, scope: &str, groups: &[String]) -> Value {
        let mut c = json!({ "sub": u.id });
        let has = |s: &str| scope.split(' ').any(|x| x == s);
        if has("profile") {
            let name = cairn_domain::mail::display_name(u);
            c["name"] = json!(name);
            c["preferred_username"] = json!(u.username);
            if let Some(v) = u.text("firstname").filter(|v| !v.is_empty()) {
                c["given_name"] = json!(v);
            }
            if let Some(v) = u.text("lastname").filter(|v| !v.is_empty()) {
                c["family_name"] = json!(v);
            }
            c["updated_at"] = json!(u.updated.timestamp());
        }
        if has("email") && !u.email.is_empty() {
            c["email"] = json!(u.email);
            // Admins manage the addresses; the user did not prove them.
            c["email_verified"] = json!(false);
        }
        if has("groups") {
            c["groups"] = json!(groups);
        }
        c
    }

    /// The authorization code grant (RFC 6749 §4.1.3, RFC 7636 §4.6) for an authenticated
    /// client. A code presented twice revokes what its first redemption produced.
    pub async fn oidc_redeem_code(
        &self,
        ctx: &Ctx,
        client: &Application,
        code: &str,
        redirect_uri: Option<&str>,
        verifier: Option<&str>,
    ) -> Result<std::result::Result<IssuedTokens, OidcRefusal>> {
        if self.throttled(ctx) {
            return Ok(Err(refuse("slow_down", "too many invalid codes from this address: wait a minute")));
        }
        if code.len() > 128 {
            return Ok(Err(self.unknown_grant(ctx)));
        }
        // The keys are read (made, the first time) before the transaction: signing inside it
        // must not wait for another connection.
        self.keys(false).await?;
        let now = self.now();
        let mut tx = self.store().begin().await?;
        let mut db = tx.db();
        let hash = token_hash(code);
        // The user's row first, then the code's: a suspension locks them in that order too.
        let Some(first) = db.oidc_code(&hash, false).await? else {
            tx.commit().await?;
            return Ok(Err(self.unknown_grant(ctx)));
        };
        let access = self.live_access(&mut db, &first.user_id, client, true).await?;
        let Some(g) = db.oidc_code(&hash, true).await? else {
            tx.commit().await?;
            return Ok(Err(self.unknown_grant(ctx)));
        };
        let user = db.get_user(&g.user_id).await?;
        let fail =
            |why: &str, extra: Value| self.token_failure_event(ctx, client, user.as_ref(), "oidc_token", why, extra);
        let grant_type = json!({ "grant_type": "authorization_code" });
        if g.app_id != client.id {
            // Another client's code proves nothing about this one; its owner keeps it.
            let ev = fail("the code was issued to another client", grant_type);
            return self.refused(tx, ev, refuse("invalid_grant", "the code was not issued to this client")).await;
        }
        if g.used.is_some() {
            let revoked = db.revoke_oidc_family(&g.family).await?;
            let ev = fail(
                "the code was already used: the tokens it produced are revoked",
                json!({ "grant_type": "authorization_code", "revoked_tokens": revoked }),
            );
            return self
                .refused(tx, ev, refuse("invalid_grant", "the code was already used; its tokens are revoked"))
                .await;
        }
        let refused = if g.expires <= now {
            Some("the code has expired")
        } else if g.data["redirect_uri"].as_str() != redirect_uri {
            Some("redirect_uri does not match the authorization request's")
        } else {
            match (g.data["code_challenge"].as_str(), verifier) {
                (Some(ch), Some(v)) if pkce_well_formed(v) && pkce_matches(v, ch) => None,
                (Some(_), Some(_)) => Some("the code_verifier does not match the code_challenge"),
                (Some(_), None) => Some("code_verifier is required (the request had a code_challenge)"),
                // A verifier without a challenge is a downgrade attempt (RFC 9700 §2.1.1).
                (None, Some(_)) => Some("code_verifier was sent but the request had no code_challenge"),
                (None, None) => None,
            }
        };
        // The code is spent by any attempt with the right client: a wrong verifier cannot
        // be retried.
        db.use_oidc_code(&g.hash, now).await?;
        if let Some(why) = refused {
            let ev = fail(why, grant_type);
            return self.refused(tx, ev, refuse("invalid_grant", why)).await;
        }
        let user = match access {
            Ok(u) => u,
            Err(d) => {
                let ev = fail(d.reason(), grant_type);
                return self
                    .refused(tx, ev, refuse("invalid_grant", "the user may no longer use this application"))
                    .await;
            }
        };
        db.trim_oidc_families(&user.id, &client.id, MAX_FAMILIES).await?;
        let scope = g.data["scope"].as_str().unwrap_or("openid").to_string();
        let auth_time = g.data["auth_time"].as_i64().unwrap_or(now.timestamp());
        let nonce = g.data["nonce"].as_str().map(str::to_string);
        let out = self.mint(&mut db, client, &user, &g.family, &scope, auth_time, nonce.as_deref(), true).await?;
        let mut detail = app_detail(client);
        detail["grant_type"] = json!("authorization_code");
        detail["scope"] = json!(scope);
        detail["refresh_token"] = json!(out.refresh_token.is_some());
        let actor = Ctx { actor: crate::auth::application_actor(client), ..ctx.clone() };
        let ev = self.event(&actor, "oidc_token", Some(("user", &user.id, &user.username)), vec![], detail);
        db.insert_event(&ev).await?;
        tx.commit().await?;
        Ok(Ok(out))
    }

    /// The refresh token grant (RFC 6749 §6): the token is spent and a new one issued in the
    /// same family; a spent token presented again revokes the family.
    pub async fn oidc_refresh(
        &self,
        ctx: &Ctx,
        client: &Application,
        token: &str,
        scope: Option<&str>,
    ) -> Result<std::result::Result<IssuedTokens, OidcRefusal>> {
        if self.throttled(ctx) {
            return Ok(Err(refuse("slow_down", "too many invalid tokens from this address: wait a minute")));
        }
        if !client.allows_grant("refresh_token") {
            return Ok(Err(refuse("unauthorized_client", "this client may not use the refresh_token grant")));
        }
        if token.len() > 128 {
            return Ok(Err(self.unknown_grant(ctx)));
        }
        self.keys(false).await?;
        let now = self.now();
        let mut tx = self.store().begin().await?;
        let mut db = tx.db();
        let found = db.oidc_token(&token_hash(token), now).await?.filter(|g| g.kind == "refresh");
        let Some(g) = found else {
            tx.commit().await?;
            return Ok(Err(self.unknown_grant(ctx)));
        };
        let user = db.get_user(&g.user_id).await?;
        let fail =
            |why: &str, extra: Value| self.token_failure_event(ctx, client, user.as_ref(), "oidc_refresh", why, extra);
        if g.app_id != client.id {
            let ev = fail("the refresh token was issued to another client", json!({}));
            return self
                .refused(tx, ev, refuse("invalid_grant", "the refresh token was not issued to this client"))
                .await;
        }
        let access = self.live_access(&mut db, &g.user_id, client, true).await?;
        // Spent atomically: of two exchanges racing, one wins and the other is a reuse.
        if !db.rotate_oidc_token(&g.hash, now).await? {
            let revoked = db.revoke_oidc_family(&g.family).await?;
            let ev = fail(
                "a spent refresh token was presented again: its family is revoked",
                json!({ "revoked_tokens": revoked }),
            );
            return self
                .refused(tx, ev, refuse("invalid_grant", "the refresh token was already used; its family is revoked"))
                .await;
        }
        let granted_scope = g.data["scope"].as_str().unwrap_or("openid").to_string();
        let scope = match scope {
            Some(s) if !s.trim().is_empty() => {
                let asked: Vec<&str> = s.split(' ').filter(|x| !x.is_empty()).collect();
                if let Some(x) = asked.iter().find(|x| !granted_scope.split(' ').any(|g| g == **x)) {
                    drop(tx);
                    return Ok(Err(refuse("invalid_scope", format!("scope '{x}' was not granted"))));
                }
                asked.join(" ")
            }
            _ => granted_scope,
        };
        let user = match access {
            Ok(u) => u,
            Err(d) => {
                let revoked = db.revoke_oidc_family(&g.family).await?;
                let ev = fail(d.reason(), json!({ "revoked_tokens": revoked }));
                return self
                    .refused(tx, ev, refuse("invalid_grant", "the user may no longer use this application"))
                    .await;
            }
        };
        let auth_time = g.data["auth_time"].as_i64().unwrap_or(now.timestamp());
        let out = self.mint(&mut db, client, &user, &g.family, &scope, auth_time, None, true).await?;
        let mut detail = app_detail(client);
        detail["grant_type"] = json!("refresh_token");
        detail["scope"] = json!(scope);
        let actor = Ctx { actor: crate::auth::application_actor(client), ..ctx.clone() };
        let ev = self.event(&actor, "oidc_refresh", Some(("user", &user.id, &user.username)), vec![], detail);
        db.insert_event(&ev).await?;
        tx.commit().await?;
        Ok(Ok(out))
    }

    /// A token as it stands now: live (stored, unexpired, not spent) and its user still allowed
    /// to use its application. `None` otherwise.
    pub async fn oidc_token_info(&self, token: &str) -> Result<Option<TokenInfo>> {
        if token.is_empty() || token.len() > 128 {
            return Ok(None);
        }
        let mut c = self.store().read().await?;
        let mut db = c.db();
        let Some(g) = db.oidc_token(&token_hash(token), self.now()).await? else { return Ok(None) };
        if g.used.is_some() {
            return Ok(None);
        }
        let Some(app) = db.get_application(&g.app_id).await? else { return Ok(None) };
        let Ok(user) = self.live_access(&mut db, &g.user_id, &app, false).await? else { return Ok(None) };
        Ok(Some(TokenInfo {
            user,
            scope: g.data["scope"].as_str().unwrap_or_default().to_string(),
            application: app,
            kind: g.kind,
            issued: g.created,
            expires: g.expires,
        }))
    }

    /// The userinfo claims of a live access token.
    pub async fn oidc_userinfo(&self, token: &str) -> Result<Option<Value>> {
        let Some(t) = self.oidc_token_info(token).await?.filter(|t| t.kind == "access") else { return Ok(None) };
        let groups = if t.scope.split(' ').any(|s| s == "groups") {
            let mut c = self.store().read().await?;
            c.db().groups_of_user(&t.user.id).await?.into_iter().map(|g| g.name).collect()
        } else {
            vec![]
        };
        Ok(Some(self.user_claims(&t.user, &t.scope, &groups)))
    }

    /// Revocation (RFC 7009) by an authenticated client of one of its own tokens: a refresh
    /// token takes its whole family, an access token itself. Someone else's or an unknown token
    /// changes nothing (and the answer does not say so).
    pub async fn oidc_revoke(&self, ctx: &Ctx, client: &Application, token: &str) -> Result<()> {
        if token.is_empty() || token.len() > 128 {
            return Ok(());
        }
        let mut tx = self.store().begin().await?;
        let mut db = tx.db();
        let Some(g) = db.oidc_token(&token_hash(token), self.now()).await? else { return Ok(()) };
        if g.app_id != client.id {
            return Ok(());
        }
        let revoked = if g.kind == "refresh" {
            db.revoke_oidc_family(&g.family).await?
        } else {
            db.revoke_oidc_token(&g.hash).await?
        };
        let user = db.get_user(&g.user_id).await?;
        let mut detail = app_detail(client);
        detail["token_type"] = json!(g.kind);
        detail["revoked_tokens"] = json!(revoked);
        let actor = Ctx { actor: crate::auth::application_actor(client), ..ctx.clone() };
        let target = user.as_ref().map(|u| ("user", u.id.as_str(), u.username.as_str()));
        let ev = self.event(&actor, "oidc_revoke", target, vec![], detail);
        db.insert_event(&ev).await?;
        tx.commit().await?;
        Ok(())
    }

    /// RP-initiated logout: ends the portal session (when there is one) and records it.
    pub async fn oidc_logout(&self, ctx: &Ctx, session_cookie: Option<&str>, app: Option<&Application>) -> Result<()> {
        let mut user = None;
        if let Some(c) = session_cookie {
            if let Some(s) = self.session(c).await? {
                user = self.get_user(&s.user_id).await.ok();
                self.end_session(c).await?;
            }
        }
        let Some(u) = user else { return Ok(()) };
        let detail = app.map(app_detail).unwrap_or_else(|| json!({}));
        let ctx = Ctx { actor: actor_of(&u), ..ctx.clone() };
        let mut tx = self.store().begin().await?;
        let ev = self.event(&ctx, "oidc_logout", Some(("user", &u.id, &u.username)), vec![], detail);
        tx.db().insert_event(&ev).await?;
        tx.commit().await?;
        Ok(())
    }

    /// Live OIDC tokens of a user (tests, the admin portal).
    pub async fn oidc_token_count(&self, user_id: &str) -> Result<i64> {
        let mut c = self.store().read().await?;
        Ok(c.db().count_oidc_tokens(user_id).await?)
    }
}
