//! `Directory::authenticate`: the one entry point every protocol calls to ask *may this
//! person, with this secret (and second factor), from this address, use this resource now?*
//!
//! ```text
//!  throttled address ──────────────────────────────▶ Refusal::Throttled (no work, no event)
//!  unknown login ───────── (a hash is still spent) ─▶ Refusal::Credentials
//!  ── in one transaction, the account's row locked ─────────────────────────────────────
//!  locked (lockout, §3.5) ─────── (not counted) ───▶ Credentials, or Denied(Locked) when
//!                                                    the password was right
//!  wrong password / wrong or replayed code ─ fail ─▶ Credentials (a lock ends sessions)
//!  access decision (state, password, MFA, grant) ──▶ Granted │ Step (+ ticket) │ Denied
//!  exactly one event, with the final outcome
//! ```
//! The failure counter resets only when the whole authentication succeeds: a right password
//! whose code is still to come leaves it as it was, so the second factor cannot be guessed
//! by interleaving the right password. Hashing runs outside the transaction; the transaction
//! re-reads the account under its row lock, so a failure can never write back a state read
//! before a concurrent suspension.

use std::net::IpAddr;

use cairn_domain::access::{verdict, AccessRequest, Denial, Protocol, Step, Verdict};
use cairn_domain::application::Application;
use cairn_domain::graph::{GraphKind, ResourceKind, ResourceRef};
use cairn_domain::lockout::{LockPolicy, Lockout};
use cairn_domain::oauth::ServiceAccount;
use cairn_domain::user::{Change, PasswordStatus};
use cairn_domain::{Actor, Admin, Secret, State, User};
use cairn_store::{Account, AdminExtras, Db, Ticket};
use chrono::{DateTime, Duration, Utc};
use serde_json::{json, Value};

use crate::error::Refusal;
use crate::error::{Error, Result};
use crate::tokens::{dummy_hash, random_token, token_hash};
use crate::{Ctx, Directory};

/// How long a sign-in step (code, password change, enrolment) may take.
pub const STEP_VALIDITY: Duration = Duration::minutes(10);
/// At most this much of a login string is looked up or kept in an event: anything longer
/// is no account's name, and an anonymous client must not be able to grow storage with it.
pub const MAX_LOGIN_CHARS: usize = 256;
const EVENT_LOGIN_CHARS: usize = 128;

/// One sign-in attempt.
#[derive(Debug, Clone)]
pub struct AuthRequest<'a> {
    pub protocol: Protocol,
    pub credential: Credential<'a>,
    /// What the person wants to use: the LDAP server, a RADIUS server, an application.
    /// `None` for Cairn's own portals; the other protocols grant nothing without one.
    pub resource: Option<ResourceRef>,
    pub client_addr: Option<String>,
    /// The device the person signs in through, as it names itself (a RADIUS NAS-Identifier),
    /// kept in the event.
    pub device: Option<String>,
}

#[derive(Debug, Clone)]
pub enum Credential<'a> {
    /// A login (username or e-mail; an administrator's e-mail on the admin portal) and its
    /// password, with the TOTP code when the client sends both at once.
    Password { login: &'a str, password: &'a Secret, code: Option<&'a str> },
    /// The code for a sign-in whose password an earlier call verified: `ticket` is what that
    /// call returned with `Step::SecondFactor`.
    SecondFactor { ticket: &'a str, code: &'a str },
    /// An OAuth 2.0 client id and secret: a service account's (protocol `OAuth2`) or an
    /// application's (protocol `Oidc`, at its token endpoint).
    ClientSecret { client_id: &'a str, secret: &'a Secret },
}

/// Who signed in.
#[derive(Debug, Clone)]
pub enum Principal {
    User(User),
    Admin(Admin),
    Service(ServiceAccount),
    /// An OIDC application, by its client credentials.
    Application(Box<Application>),
}

impl Principal {
    pub fn id(&self) -> &str {
        match self {
            Principal::User(u) => &u.id,
            Principal::Admin(a) => &a.id,
            Principal::Service(s) => &s.id,
            Principal::Application(a) => &a.id,
        }
    }
    /// How events name it.
    pub fn name(&self) -> &str {
        match self {
            Principal::User(u) => &u.username,
            Principal::Admin(a) => &a.email,
            Principal::Service(s) => &s.name,
            Principal::Application(a) => &a.name,
        }
    }
    pub fn actor(&self) -> Actor {
        match self {
            Principal::User(u) => Actor { kind: "user".into(), id: Some(u.id.clone()), name: Some(u.username.clone()) },
            Principal::Admin(a) => Actor::admin(&a.id, &a.email),
            Principal::Service(s) => s.actor(),
            Principal::Application(a) => application_actor(a),
        }
    }
    pub fn user(self) -> Option<User> {
        match self {
            Principal::User(u) => Some(u),
            Principal::Admin(_) | Principal::Service(_) | Principal::Application(_) => None,
        }
    }
    pub fn admin(self) -> Option<Admin> {
        match self {
            Principal::Admin(a) => Some(a),
            Principal::User(_) | Principal::Service(_) | Principal::Application(_) => None,
        }
    }
}

#[derive(Debug, Clone)]
pub enum Authenticated {
    /// Everything holds: the protocol lets the person in.
    Granted(Principal),
    /// The password was right; the person must first do `step`. `ticket` (a secret for the
    /// client to keep, valid [`STEP_VALIDITY`], ended by suspension, lock and password change)
    /// continues the sign-in: `Credential::SecondFactor` for the code,
    /// [`Directory::change_password_with_ticket`], or the enrolment pages.
    Step { principal: Principal, step: Step, ticket: String },
}

impl Authenticated {
    pub fn principal(&self) -> &Principal {
        match self {
            Authenticated::Granted(p) | Authenticated::Step { principal: p, .. } => p,
        }
    }
}

/// The ticket kinds of a protocol's steps, e.g. `portal_totp`.
fn ticket_kind(protocol: Protocol, step: Step) -> String {
    let prefix = match protocol {
        Protocol::Portal => "portal",
        Protocol::AdminPortal => "admin",
        p => p.as_str(),
    };
    let step = match step {
        Step::SecondFactor => "totp",
        Step::Enroll => "enroll",
        Step::ChangePassword => "change",
    };
    format!("{prefix}_{step}")
}

fn account_of(protocol: Protocol) -> Account {
    if protocol == Protocol::AdminPortal {
        Account::Admin
    } else {
        Account::User
    }
}

/// The throttling key of a client address: the address, or its /64 for IPv6 (one host has
/// a whole /64 to rotate through).
pub(crate) fn address_key(addr: &str) -> Option<IpAddr> {
    match addr.parse::<IpAddr>().ok()? {
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => Some(IpAddr::V4(v4)),
            None => {
                let s = v6.segments();
                Some(IpAddr::V6(std::net::Ipv6Addr::new(s[0], s[1], s[2], s[3], 0, 0, 0, 0)))
            }
        },
        v4 => Some(v4),
    }
}

/// The first `n` characters, for what an event keeps of a string an anonymous client sent.
pub(crate) fn clip(s: &str, n: usize) -> String {
    match s.char_indices().nth(n) {
        Some((i, _)) => format!("{}…", &s[..i]),
        None => s.to_string(),
    }
}

/// What a sign-in needs of a user or an administrator.
struct Acct {
    kind: Account,
    principal: Principal,
    hash: Option<Secret>,
    lock: Lockout,
    totp: Option<String>,
    /// MFA is required of this account (the user's `enable_user_portal_multifactor`, the
    /// administrator's `mfa_required`).
    mfa_required: bool,
    /// MFA is not asked of the account before this (JumpCloud's `mfa.exclusionUntil`).
    mfa_excluded_until: Option<DateTime<Utc>>,
    state: State,
    password: PasswordStatus,
    delegated: bool,
}

impl Acct {
    fn of_user(u: User) -> Acct {
        Acct {
            kind: Account::User,
            hash: u.password_hash.clone(),
            lock: u.lockout(),
            totp: u.totp_enabled.then(|| u.totp_secret.as_ref().map(|s| s.expose().to_string())).flatten(),
            mfa_required: u.flag("enable_user_portal_multifactor"),
            // The end of an exclusion the record holds, running or not (checked at `now`).
            mfa_excluded_until: u.mfa_excluded_until(DateTime::<Utc>::MIN_UTC),
            state: u.state,
            password: u.password_status(),
            delegated: u.profile.get("delegatedAuthority").is_some_and(|v| !v.is_null()),
            principal: Principal::User(u),
        }
    }

    fn of_admin(a: Admin, x: AdminExtras) -> Acct {
        Acct {
            kind: Account::Admin,
            hash: Some(a.password_hash.clone()),
            lock: x.lockout,
            totp: x.totp_secret,
            mfa_required: x.mfa_required,
            mfa_excluded_until: None,
            // Administrators have no lifecycle of their own.
            state: State::Activated,
            password: PasswordStatus::Active,
            delegated: false,
            principal: Principal::Admin(a),
        }
    }

    fn id(&self) -> &str {
        self.principal.id()
    }

    fn name(&self) -> &str {
        self.principal.name()
    }

    fn actor(&self) -> Actor {
        self.principal.actor()
    }

    fn target(&self) -> (&'static str, &str, &str) {
        let kind = match self.kind {
            Account::User => "user",
            Account::Admin => "admin",
        };
        (kind, self.id(), self.name())
    }
}

/// The second factor as presented and checked before the transaction.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Code {
    None,
    /// The TOTP time step the code matched.
    Matched(i64),
    Wrong,
}

/// What a finished attempt wrote, before it is turned into the answer.
struct Outcome {
    result: std::result::Result<Authenticated, Refusal>,
    reason: String,
}

impl Directory {
    /// Authenticates one attempt of `req.protocol`; see the module documentation. `ctx`
    /// names the interface (its source) and the client address for the event.
    pub async fn authenticate(&self, ctx: &Ctx, req: AuthRequest<'_>) -> Result<Authenticated> {
        let addr = req.client_addr.as_deref().and_then(address_key);
        if let Some(a) = &addr {
            if !self.inner.sign_in_throttle.lock().expect("throttle").allows(a, self.now()) {
                metrics::counter!("cairn_auth_throttled_total", "protocol" => req.protocol.as_str()).increment(1);
                return Err(Error::Refused(Refusal::Throttled));
            }
        }
        let ctx = Ctx { client_addr: req.client_addr.clone().or_else(|| ctx.client_addr.clone()), ..ctx.clone() };
        let out = match &req.credential {
            Credential::Password { login, password, code } => {
                let device = req.device.as_deref();
                self.password_attempt(&ctx, req.protocol, req.resource.as_ref(), device, login, password, *code).await?
            }
            Credential::SecondFactor { ticket, code } => {
                self.code_attempt(&ctx, req.protocol, req.resource.as_ref(), req.device.as_deref(), ticket, code)
                    .await?
            }
            Credential::ClientSecret { client_id, secret } => {
                self.client_attempt(&ctx, req.protocol, client_id, secret).await?
            }
        };
        let ok = out.result.is_ok();
        metrics::counter!("cairn_auth_total", "protocol" => req.protocol.as_str(), "outcome" => if ok { "success" } else { "failure" })
            .increment(1);
        match out.result {
            Ok(a) => Ok(a),
            Err(r) => {
                if r == Refusal::Credentials {
                    if let Some(a) = &addr {
                        self.inner.sign_in_throttle.lock().expect("throttle").take(a, self.now());
                    }
                }
                tracing::debug!(protocol = req.protocol.as_str(), reason = %out.reason, "sign-in refused");
                Err(Error::Refused(r))
            }
        }
    }

    async fn find_account(&self, account: Account, login: &str) -> Result<Option<Acct>> {
        let mut c = self.store().read().await?;
        Ok(match account {
            Account::User => match c.db().user_by_username(login).await? {
                Some(u) => Some(Acct::of_user(u)),
                None => c.db().user_by_email(login).await?.map(Acct::of_user),
            },
            Account::Admin => match c.db().admin_by_email(login).await? {
                Some(a) => {
                    let x = c.db().admin_extras(&a.id).await?;
                    Some(Acct::of_admin(a, x))
                }
                None => None,
            },
        })
    }

    async fn lock_account(&self, db: &mut Db<'_>, account: Account, id: &str) -> Result<Option<Acct>> {
        Ok(match account {
            Account::User => db.lock_user(id).await?.map(Acct::of_user),
            Account::Admin => db.lock_admin(id).await?.map(|(a, x)| Acct::of_admin(a, x)),
        })
    }

    fn check_code(&self, sealed: Option<&str>, code: Option<&str>) -> Result<Code> {
        let Some(code) = code else { return Ok(Code::None) };
        let Some(sealed) = sealed else { return Ok(Code::Wrong) };
        let secret = crate::secretbox::open(self.secret_key()?, sealed)?;
        Ok(match totp_step(&secret, code, self.now()) {
            Some(step) => Code::Matched(step),
            None => Code::Wrong,
        })
    }

    #[allow(clippy::too_many_arguments)]
    async fn password_attempt(
        &self,
        ctx: &Ctx,
        protocol: Protocol,
        resource: Option<&ResourceRef>,
        device: Option<&str>,
        login: &str,
        password: &Secret,
        code: Option<&str>,
    ) -> Result<Outcome> {
        let account = account_of(protocol);
        let login = login.trim();
        let key = login.to_lowercase();
        let found = if key.is_empty() || key.chars().count() > MAX_LOGIN_CHARS || key.contains('\0') {
            None
        } else {
            self.find_account(account, &key).await?
        };
        let mut detail = attempt_detail(protocol, resource, device, clip(login, EVENT_LOGIN_CHARS));
        let Some(acct) = found else {
            // Spend what a real check costs, so timing does not tell which accounts exist.
            let _ = self.hasher().verify(password, &dummy_hash()).await;
            self.attempt_event(ctx, None, false, "no such account", detail, vec![]).await?;
            return Ok(Outcome { result: Err(Refusal::Credentials), reason: "no such account".into() });
        };
        if acct.delegated {
            // The upstream directory holds this password (§3.5, §12), never the local hash: a
            // bind as the user answers. An upstream that cannot be asked refuses the attempt
            // without counting it against the user (it is no guess), with an event saying why.
            let Principal::User(u) = &acct.principal else {
                return Err(Error::Internal("a delegated account is not a user".into()));
            };
            let authority = u.profile.get("delegatedAuthority").and_then(|v| v.get("id")).and_then(Value::as_str);
            let answer = match authority {
                Some(conn) if cairn_domain::id::is_object_id(conn) => {
                    self.upstream_verify(conn, &u.id, &u.username, password).await?
                }
                _ => crate::dirsync::Upstream::Unavailable(
                    "the password is delegated to an upstream directory that no connection verifies".into(),
                ),
            };
            match answer {
                crate::dirsync::Upstream::Answered(ok) => {
                    let code = self.check_code(acct.totp.as_deref(), code)?;
                    detail["upstream"] = json!(authority);
                    return self
                        .conclude(
                            ctx,
                            protocol,
                            resource,
                            acct.kind,
                            acct.id(),
                            Proof::Upstream { ok },
                            code,
                            None,
                            detail,
                        )
                        .await;
                }
                crate::dirsync::Upstream::Unavailable(why) => {
                    detail["upstream_unavailable"] = json!(true);
                    let ctx = Ctx { actor: acct.actor(), ..ctx.clone() };
                    self.attempt_event(&ctx, Some(acct.target()), false, &why, detail, vec![]).await?;
                    return Ok(Outcome { result: Err(Refusal::Credentials), reason: why });
                }
            }
        }
        let verified_hash = acct.hash.clone();
        let password_ok = match &verified_hash {
            Some(h) if !password.expose().is_empty() => self.hasher().verify(password, h).await?,
            _ => {
                let _ = self.hasher().verify(password, &dummy_hash()).await;
                false
            }
        };
        let code = self.check_code(acct.totp.as_deref(), code)?;
        self.conclude(
            ctx,
            protocol,
            resource,
            acct.kind,
            acct.id(),
            Proof::Password { ok: password_ok, hash: verified_hash },
            code,
            None,
            detail,
        )
        .await
    }

    async fn code_attempt(
        &self,
        ctx: &Ctx,
        protocol: Protocol,
        resource: Option<&ResourceRef>,
        device: Option<&str>,
        ticket: &str,
        code: &str,
    ) -> Result<Outcome> {
        let account = account_of(protocol);
        let kind = ticket_kind(protocol, Step::SecondFactor);
        let hash = token_hash(ticket);
        let found = {
            let mut c = self.store().read().await?;
            c.db().ticket(account, &hash, &kind, self.now()).await?
        };
        // An unknown ticket names no account: nothing to count or record (and nothing for an
        // anonymous client to fill the event log with); the address is throttled.
        let Some(t) = found else {
            return Ok(Outcome { result: Err(Refusal::Credentials), reason: "unknown sign-in step".into() });
        };
        let acct = {
            let mut c = self.store().read().await?;
            match account {
                Account::User => c.db().get_user(&t.owner).await?.map(Acct::of_user),
                Account::Admin => match c.db().get_admin(&t.owner).await? {
                    Some(a) => {
                        let x = c.db().admin_extras(&a.id).await?;
                        Some(Acct::of_admin(a, x))
                    }
                    None => None,
                },
            }
        };
        let Some(acct) = acct else {
            return Ok(Outcome { result: Err(Refusal::Credentials), reason: "the account is gone".into() });
        };
        let code = match self.check_code(acct.totp.as_deref(), Some(code))? {
            Code::None => Code::Wrong,
            c => c,
        };
        // The ticket was issued for one protocol and resource: it opens nothing else.
        if t.data.get("protocol") != Some(&json!(protocol)) || t.data.get("resource") != Some(&resource_json(resource))
        {
            return Ok(Outcome {
                result: Err(Refusal::Credentials),
                reason: "the sign-in step is for another resource".into(),
            });
        }
        let mut detail = attempt_detail(protocol, resource, device, acct.name().to_string());
        detail["step"] = json!("totp");
        self.conclude(ctx, protocol, resource, account, &t.owner, Proof::Ticket, code, Some(hash), detail).await
    }

    /// OAuth 2.0 client credentials: a service account's (protocol `OAuth2`) or an
    /// application's (protocol `Oidc`, at its token endpoint). The secret's SHA-256 is compared
    /// in constant time with the stored one (a dummy when the client id is unknown, so both cost
    /// the same); one event per attempt. No lockout: a secret is 256 random bits, and a lock
    /// would let anyone who knows a client id shut the client out; the address throttle slows
    /// guessing. A public application has no secret: no secret it is sent matches.
    async fn client_attempt(&self, ctx: &Ctx, protocol: Protocol, client_id: &str, secret: &Secret) -> Result<Outcome> {
        use subtle::ConstantTimeEq;
        let client_id = client_id.trim();
        let readable =
            !(client_id.is_empty() || client_id.chars().count() > MAX_LOGIN_CHARS || client_id.contains('\0'));
        let found: Option<(Option<String>, Principal)> = if !readable {
            None
        } else if protocol == Protocol::Oidc {
            let mut c = self.store().read().await?;
            c.db()
                .application_by_client_id(client_id)
                .await?
                .map(|a| (a.secret_hash.clone(), Principal::Application(Box::new(a))))
        } else {
            let mut c = self.store().read().await?;
            c.db()
                .service_account_by_client_id(client_id)
                .await?
                .map(|a| (Some(a.secret_hash.clone()), Principal::Service(a)))
        };
        let presented = crate::keys::hash_key(secret.expose());
        let stored =
            found.as_ref().and_then(|(h, _)| h.clone()).unwrap_or_else(|| crate::keys::hash_key("no such client"));
        let matches = bool::from(presented.as_bytes().ct_eq(stored.as_bytes()));
        let mut detail = json!({ "protocol": protocol, "resource": null, "login": clip(client_id, EVENT_LOGIN_CHARS) });
        match &found {
            Some((_, Principal::Application(a))) => {
                detail["resource"] = resource_json(Some(&crate::applications::app_ref(&a.id)));
                detail["client_authentication"] = json!(true);
            }
            _ => detail["grant_type"] = json!("client_credentials"),
        }
        let (result, reason) = match &found {
            Some((Some(_), p)) if matches && !secret.expose().is_empty() => {
                let why = if protocol == Protocol::Oidc { "client authenticated" } else { "token issued" };
                (Ok(Authenticated::Granted(p.clone())), why)
            }
            Some(_) => (Err(Refusal::Credentials), "wrong client secret"),
            None => (Err(Refusal::Credentials), "no such client"),
        };
        let (ctx, target) = match &found {
            Some((_, p)) => {
                let kind = if protocol == Protocol::Oidc { "application" } else { "service_account" };
                (Ctx { actor: p.actor(), ..ctx.clone() }, Some((kind, p.id(), p.name())))
            }
            None => (ctx.clone(), None),
        };
        self.attempt_event(&ctx, target, result.is_ok(), reason, detail, vec![]).await?;
        Ok(Outcome { result, reason: reason.into() })
    }

    /// The part of an attempt that reads and writes the account: one transaction, the row
    /// locked, one event.
    #[allow(clippy::too_many_arguments)]
    async fn conclude(
        &self,
        ctx: &Ctx,
        protocol: Protocol,
        resource: Option<&ResourceRef>,
        account: Account,
        id: &str,
        proof: Proof,
        code: Code,
        ticket: Option<String>,
        mut detail: Value,
    ) -> Result<Outcome> {
        let now = self.now();
        let mut tx = self.store().begin().await?;
        let org = crate::org_of(&mut tx.db()).await?;
        let policy = LockPolicy::from(&org.settings.password_policy);
        let Some(acct) = self.lock_account(&mut tx.db(), account, id).await? else {
            tx.commit().await?;
            return Ok(Outcome { result: Err(Refusal::Credentials), reason: "the account is gone".into() });
        };
        let password_ok = match proof {
            // The password verified must still be the account's (it may have changed while
            // the hash was computed); otherwise it proves nothing.
            Proof::Password { ok, hash } => {
                ok && hash.as_ref().map(Secret::expose) == acct.hash.as_ref().map(Secret::expose)
            }
            Proof::Ticket => true,
            // Only while the account is still delegated: the upstream's answer says nothing of
            // a password Cairn now holds.
            Proof::Upstream { ok } => ok && acct.delegated,
        };
        let rules = crate::radius::resource_rules(&mut tx.db(), resource).await?;
        let before = acct.lock;
        let mut lock = before.current(&policy, now);
        // A resource may let a locked account in (RADIUS `userLockoutAction: MAINTAIN`): only
        // with the right password, and the lock stays for everything else.
        let lock_maintained = lock.locked && rules.allow_locked && password_ok;
        let mut revoke = false;
        let mut new_ticket: Option<(Step, String)> = None;
        // A matching code is used up here, and only here, so it is accepted once.
        let replayed = match code {
            Code::Matched(step) if password_ok && !lock.locked => !tx.db().claim_totp_step(account, id, step).await?,
            _ => false,
        };
        let (result, reason): (std::result::Result<Authenticated, Refusal>, String) = if lock.locked && !lock_maintained
        {
            // Refused and not counted; only the owner of the right password learns why (the
            // state first, as in the access decision).
            let d = if acct.state != State::Activated { Denial::NotActive } else { Denial::Locked };
            let r = if password_ok { Refusal::Denied(d) } else { Refusal::Credentials };
            (Err(r), Denial::Locked.reason().into())
        } else if !password_ok {
            lock = lock.fail(&policy, now);
            revoke = lock.locked;
            let why = if acct.delegated {
                "wrong password (refused by the upstream directory)"
            } else if acct.hash.is_none() {
                Denial::PasswordPending.reason()
            } else {
                "wrong password"
            };
            (Err(Refusal::Credentials), why.into())
        } else if code == Code::Wrong {
            lock = lock.fail(&policy, now);
            revoke = lock.locked;
            (Err(Refusal::Credentials), "wrong TOTP code".into())
        } else if replayed {
            lock = lock.fail(&policy, now);
            revoke = lock.locked;
            (Err(Refusal::Credentials), "TOTP code already used".into())
        } else {
            let enrolled = acct.totp.is_some();
            // Cairn's own portals need no grant; every other protocol reaches a resource only
            // through an association (directly or through a group).
            let granted = match (resource, &acct.principal) {
                (None, _) => !protocol_needs_resource(protocol),
                (Some(r), Principal::User(u)) => crate::grants::granted_in(&mut tx.db(), &u.id, r).await?,
                (Some(_), _) => false,
            };
            let excluded = acct.mfa_excluded_until.is_some_and(|t| t > now);
            let password = match acct.password {
                // RADIUS `userPasswordExpirationAction: MAINTAIN` lets an expired password in.
                PasswordStatus::Expired if rules.allow_expired => PasswordStatus::Active,
                p => p,
            };
            // An application may ask a second factor of everyone, and grants nothing while
            // inactive.
            let (app_active, app_mfa) = match resource {
                Some(r) if r.kind == ResourceKind::Application => match tx.db().get_application(&r.id).await? {
                    Some(a) => (a.settings.active, a.settings.require_mfa),
                    None => (false, false),
                },
                _ => (true, false),
            };
            let granted = granted && app_active;
            let access = AccessRequest {
                state: acct.state,
                password,
                delegated: acct.delegated,
                locked: false,
                // On the web an enrolled authenticator is always asked for.
                // An exclusion period (resetmfa) waives the requirement until it ends.
                mfa_required: ((acct.mfa_required || app_mfa) && !excluded)
                    || (enrolled && protocol.web())
                    || rules.mfa.is_some_and(|m| m.requires(enrolled, excluded)),
                mfa_presented: matches!(code, Code::Matched(_)),
                granted,
            };
            match verdict(&access, protocol, enrolled) {
                Verdict::Allow => {
                    lock = lock.succeed(&policy, now);
                    (Ok(Authenticated::Granted(acct.principal.clone())), "signed in".into())
                }
                Verdict::Step(step) => {
                    // The counter resets once both factors are in; a code still to come keeps it.
                    if step != Step::SecondFactor {
                        lock = lock.succeed(&policy, now);
                    }
                    let token = random_token();
                    new_ticket = Some((step, token.clone()));
                    detail["next_step"] = json!(step);
                    let reason = match step {
                        Step::SecondFactor => "password verified; a TOTP code is required",
                        Step::Enroll => "verified; MFA enrolment is required",
                        Step::ChangePassword => "verified; the password must be changed",
                    };
                    (Ok(Authenticated::Step { principal: acct.principal.clone(), step, ticket: token }), reason.into())
                }
                Verdict::Deny(d) => (Err(Refusal::Denied(d)), d.reason().into()),
            }
        };
        if lock != before {
            tx.db().set_lockout(account, id, &lock).await?;
        }
        if revoke {
            tx.db().revoke_sessions(account, id).await?;
        }
        if result.is_ok() {
            if let Some(t) = &ticket {
                tx.db().take_ticket(account, t).await?;
            }
        }
        if let Some((step, token)) = &new_ticket {
            let t = Ticket {
                owner: id.to_string(),
                kind: ticket_kind(protocol, *step),
                expires: now + STEP_VALIDITY,
                data: json!({ "protocol": protocol, "resource": resource_json(resource) }),
            };
            tx.db().put_ticket(account, &token_hash(token), &t, now).await?;
        }
        let changes = lockout_changes(&before, &lock);
        if lock.locked && !before.locked {
            detail["locked_after_failures"] = json!(lock.failures);
        }
        let ctx = Ctx { actor: acct.actor(), ..ctx.clone() };
        let ev = self.attempt_event_for(&ctx, Some(acct.target()), result.is_ok(), &reason, detail, changes);
        tx.db().insert_event(&ev).await?;
        tx.commit().await?;
        Ok(Outcome { result, reason })
    }

    fn attempt_event_for(
        &self,
        ctx: &Ctx,
        target: Option<(&str, &str, &str)>,
        ok: bool,
        reason: &str,
        mut detail: Value,
        changes: Vec<Change>,
    ) -> cairn_domain::Event {
        detail["reason"] = json!(reason);
        let action = if ok { "login_success" } else { "login_failure" };
        let mut ev = self.event(ctx, action, target, changes, detail);
        ev.outcome = if ok { "success".into() } else { "failure".into() };
        ev
    }

    async fn attempt_event(
        &self,
        ctx: &Ctx,
        target: Option<(&str, &str, &str)>,
        ok: bool,
        reason: &str,
        detail: Value,
        changes: Vec<Change>,
    ) -> Result<()> {
        let ev = self.attempt_event_for(ctx, target, ok, reason, detail, changes);
        let mut tx = self.store().begin().await?;
        tx.db().insert_event(&ev).await?;
        tx.commit().await?;
        Ok(())
    }

    /// Opens the locks whose `lockoutTimeInSeconds` has passed, so REST, the portals and
    /// filters show them open without waiting for a sign-in (the scheduler calls this).
    pub async fn unlock_expired_locks(&self) -> Result<usize> {
        let org = self.organization().await?;
        let Some(after) = LockPolicy::from(&org.settings.password_policy).unlock_after else { return Ok(0) };
        let cutoff = self.now() - after;
        {
            let mut c = self.store().read().await?;
            if !c.db().any_locked_before(Account::User, cutoff).await?
                && !c.db().any_locked_before(Account::Admin, cutoff).await?
            {
                return Ok(0);
            }
        }
        let mut tx = self.store().begin().await?;
        let mut n = 0;
        let sys = Ctx::new(Actor::system(), "system", None);
        for account in [Account::User, Account::Admin] {
            for (id, name) in tx.db().unlock_locked_before(account, cutoff).await? {
                let kind = if account == Account::User { "user" } else { "admin" };
                let changes = vec![Change { field: "account_locked".into(), old: json!(true), new: json!(false) }];
                let ev = self.event(
                    &sys,
                    if account == Account::User { "user_unlock" } else { "admin_unlock" },
                    Some((kind, &id, &name)),
                    changes,
                    json!({ "reason": "lockout time elapsed" }),
                );
                tx.db().insert_event(&ev).await?;
                n += 1;
            }
        }
        tx.commit().await?;
        Ok(n)
    }

    /// Whether `ticket` is a valid step ticket of this protocol and step (what it carries
    /// stays inside the directory).
    pub async fn step_ticket_valid(&self, protocol: Protocol, step: Step, ticket: &str) -> Result<bool> {
        let mut c = self.store().read().await?;
        let t =
            c.db().ticket(account_of(protocol), &token_hash(ticket), &ticket_kind(protocol, step), self.now()).await?;
        Ok(t.is_some())
    }

    /// Sets the new password of a sign-in held at `Step::ChangePassword` (an expired or
    /// forced password: both factors were already checked), ending every other session and
    /// link. Leads on to enrolment when MFA is required and nothing is enrolled.
    pub async fn change_password_with_ticket(
        &self,
        ctx: &Ctx,
        protocol: Protocol,
        ticket: &str,
        new: &Secret,
    ) -> Result<Authenticated> {
        let now = self.now();
        let mut tx = self.store().begin().await?;
        let kind = ticket_kind(protocol, Step::ChangePassword);
        let refused = || Error::Refused(Refusal::Credentials);
        let t = tx.db().ticket(Account::User, &token_hash(ticket), &kind, now).await?.ok_or_else(refused)?;
        let user = tx.db().lock_user(&t.owner).await?.ok_or_else(refused)?;
        let org = crate::org_of(&mut tx.db()).await?;
        if user.state != State::Activated
            || user.lockout().is_locked(&LockPolicy::from(&org.settings.password_policy), now)
        {
            return Err(refused());
        }
        let ctx = Ctx {
            actor: Actor { kind: "user".into(), id: Some(user.id.clone()), name: Some(user.username.clone()) },
            ..ctx.clone()
        };
        let user = self.write_password(&mut tx.db(), &ctx, user, new, "password_change").await?;
        let out = if user.mfa_required_now(now) && !user.totp_enabled {
            let token = random_token();
            let t = Ticket {
                owner: user.id.clone(),
                kind: ticket_kind(protocol, Step::Enroll),
                expires: now + STEP_VALIDITY,
                data: json!({ "protocol": protocol }),
            };
            tx.db().put_ticket(Account::User, &token_hash(&token), &t, now).await?;
            Authenticated::Step { principal: Principal::User(user), step: Step::Enroll, ticket: token }
        } else {
            Authenticated::Granted(Principal::User(user))
        };
        tx.commit().await?;
        Ok(out)
    }
}

/// Who acts, in events, when an application authenticates with its client credentials.
pub(crate) fn application_actor(a: &Application) -> Actor {
    Actor { kind: "application".into(), id: Some(a.id.clone()), name: Some(a.name.clone()) }
}

fn protocol_needs_resource(p: Protocol) -> bool {
    !matches!(p, Protocol::Portal | Protocol::AdminPortal)
}

fn resource_json(r: Option<&ResourceRef>) -> Value {
    r.map_or(Value::Null, |r| json!({ "type": r.kind.as_str(), "id": r.id }))
}

fn attempt_detail(protocol: Protocol, resource: Option<&ResourceRef>, device: Option<&str>, login: String) -> Value {
    let mut d = json!({ "protocol": protocol, "resource": resource_json(resource), "login": login });
    if let Some(dev) = device {
        d["device"] = json!(clip(dev, EVENT_LOGIN_CHARS));
    }
    d
}

/// What proves the first factor.
enum Proof {
    /// A password, and whether it matched `hash` (the hash it was checked against).
    Password { ok: bool, hash: Option<Secret> },
    /// A ticket an earlier attempt's right password produced.
    Ticket,
    /// The upstream directory's answer to a bind as a delegated user.
    Upstream { ok: bool },
}

fn lockout_changes(before: &Lockout, after: &Lockout) -> Vec<Change> {
    let mut out = vec![];
    if before.failures != after.failures {
        out.push(Change { field: "badLoginAttempts".into(), old: json!(before.failures), new: json!(after.failures) });
    }
    if before.locked != after.locked {
        out.push(Change { field: "account_locked".into(), old: json!(before.locked), new: json!(after.locked) });
    }
    out
}

/// The RFC 6238 time step (30 s, SHA-1, 6 digits) whose code `code` is, within one step of
/// clock skew either way; compared in constant time.
pub(crate) fn totp_step(secret: &[u8], code: &str, now: DateTime<Utc>) -> Option<i64> {
    use subtle::ConstantTimeEq;
    let code: String = code.chars().filter(|c| !c.is_whitespace()).collect();
    if code.len() != 6 || !code.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let t = totp_rs::TOTP::new_unchecked(totp_rs::Algorithm::SHA1, 6, 1, 30, secret.to_vec());
    let now_step = now.timestamp().max(0) / 30;
    let mut found = None;
    for step in [now_step, now_step - 1, now_step + 1] {
        let expected = t.generate((step.max(0) * 30) as u64);
        if bool::from(expected.as_bytes().ct_eq(code.as_bytes())) && found.is_none() {
            found = Some(step);
        }
    }
    found
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_are_throttled_by_host_or_ipv6_64() {
        assert_eq!(address_key("192.0.2.7"), "192.0.2.7".parse().ok());
        assert_eq!(address_key("2001:db8:1:2:aaaa::1"), address_key("2001:db8:1:2:bbbb::9"));
        assert_ne!(address_key("2001:db8:1:2::1"), address_key("2001:db8:1:3::1"));
        assert_eq!(address_key("::ffff:192.0.2.7"), "192.0.2.7".parse().ok());
        assert_eq!(address_key("not an address"), None);
    }

    #[test]
    fn logins_kept_in_events_are_clipped() {
        assert_eq!(clip("ada", 128), "ada");
        let long = "é".repeat(1000);
        let c = clip(&long, 128);
        assert_eq!(c.chars().count(), 129);
    }

    #[test]
    fn a_code_matches_its_step_within_one_step_of_skew() {
        let secret = b"12345678901234567890";
        let now = DateTime::from_timestamp(59, 0).unwrap();
        // RFC 6238 appendix B: T = 59 s, SHA-1 → 94287082 (8 digits); 6 digits: 287082.
        assert_eq!(totp_step(secret, "287082", now), Some(1));
        assert_eq!(totp_step(secret, "287 082", now), Some(1));
        let later = DateTime::from_timestamp(59 + 30, 0).unwrap();
        assert_eq!(totp_step(secret, "287082", later), Some(1), "one step late is accepted");
        let much_later = DateTime::from_timestamp(59 + 90, 0).unwrap();
        assert_eq!(totp_step(secret, "287082", much_later), None);
        assert_eq!(totp_step(secret, "28708", now), None);
        assert_eq!(totp_step(secret, "abcdef", now), None);
    }
}
