//! The access decision (§3.1): the one function every protocol asks before granting anything.
//!
//! ```text
//!  state ≠ ACTIVATED ─────────────▶ deny (NotActive)      staged or suspended: nothing
//!  password pending ──────────────▶ deny (PasswordPending) a pending password grants nothing
//!  password expired ──────────────▶ deny (PasswordExpired) change it first (portal only)
//!  locked ────────────────────────▶ deny (Locked)
//!  resource needs MFA, none given ▶ deny (MfaRequired)
//!  resource not granted ──────────▶ deny (NotGranted)
//!  otherwise ─────────────────────▶ allow
//! ```
//! Delegated authority (§12) stands in for a local password: the upstream holds it, so a
//! delegated user's local password status does not matter.

use serde::Serialize;

use crate::user::{PasswordStatus, State};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AccessRequest {
    pub state: State,
    pub password: PasswordStatus,
    /// The password is verified upstream (delegated authority).
    pub delegated: bool,
    pub locked: bool,
    /// The resource (or the user's own setting) requires a second factor …
    pub mfa_required: bool,
    /// … and one was presented and verified.
    pub mfa_presented: bool,
    /// The resource is granted to the user, directly or through a group.
    pub granted: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Denial {
    NotActive,
    PasswordPending,
    PasswordExpired,
    Locked,
    MfaRequired,
    NotGranted,
}

impl Denial {
    /// For logs and audit events; never shown to the person trying to log in, who must not
    /// learn whether an account exists or in which state (§8).
    pub fn reason(self) -> &'static str {
        match self {
            Denial::NotActive => "the account is not active",
            Denial::PasswordPending => "no password has been set yet",
            Denial::PasswordExpired => "the password has expired and must be changed",
            Denial::Locked => "the account is locked",
            Denial::MfaRequired => "a second factor is required",
            Denial::NotGranted => "the resource is not granted to this user",
        }
    }
}

/// The protocols that ask (events and metrics name them by `as_str`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Protocol {
    Portal,
    AdminPortal,
    Ldap,
    Radius,
    Oidc,
    /// OAuth 2.0 client credentials of a service account (`/oauth2/token`).
    #[serde(rename = "oauth2")]
    OAuth2,
}

impl Protocol {
    pub fn as_str(self) -> &'static str {
        match self {
            Protocol::Portal => "portal",
            Protocol::AdminPortal => "admin_portal",
            Protocol::Ldap => "ldap",
            Protocol::Radius => "radius",
            Protocol::Oidc => "oidc",
            Protocol::OAuth2 => "oauth2",
        }
    }

    /// Sign-ins in a browser: they can lead a person through steps (enrol an authenticator,
    /// change an expired password) instead of refusing.
    pub fn web(self) -> bool {
        matches!(self, Protocol::Portal | Protocol::AdminPortal | Protocol::Oidc)
    }

    /// Can ask for the second factor in a step of its own (a page, a RADIUS Access-Challenge);
    /// LDAP cannot: a bind is one message.
    pub fn challenges(self) -> bool {
        !matches!(self, Protocol::Ldap)
    }
}

/// What a person must do before a web sign-in completes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Step {
    /// Give the code of the enrolled authenticator.
    SecondFactor,
    /// Enrol an authenticator (MFA is required and none is enrolled).
    Enroll,
    /// Choose a new password (the old one expired or an admin forced a change).
    ChangePassword,
}

/// The answer to a sign-in whose password was right.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    Allow,
    Step(Step),
    Deny(Denial),
}

/// The access decision for `protocol`, where a web sign-in turns some refusals into steps.
/// Steps come only once everything else holds (a step never leads round a grant), and the
/// second factor comes before a forced password change: the old password alone must not
/// choose the new one.
pub fn verdict(r: &AccessRequest, protocol: Protocol, enrolled: bool) -> Verdict {
    let change_step = protocol.web() && r.password == PasswordStatus::Expired && !r.delegated;
    let rest = AccessRequest {
        password: if change_step { PasswordStatus::Active } else { r.password },
        mfa_presented: true,
        ..*r
    };
    if let Err(d) = decide(&rest) {
        return Verdict::Deny(d);
    }
    if r.mfa_required && !r.mfa_presented {
        if enrolled && protocol.challenges() {
            Verdict::Step(Step::SecondFactor)
        } else if change_step {
            // Enrolment, when required, follows the change.
            Verdict::Step(Step::ChangePassword)
        } else if !enrolled && protocol.web() {
            Verdict::Step(Step::Enroll)
        } else {
            Verdict::Deny(Denial::MfaRequired)
        }
    } else if change_step {
        Verdict::Step(Step::ChangePassword)
    } else {
        Verdict::Allow
    }
}

pub fn decide(r: &AccessRequest) -> Result<(), Denial> {
    if r.state != State::Activated {
        return Err(Denial::NotActive);
    }
    if !r.delegated {
        match r.password {
            PasswordStatus::Pending => return Err(Denial::PasswordPending),
            PasswordStatus::Expired => return Err(Denial::PasswordExpired),
            PasswordStatus::Active => {}
        }
    }
    if r.locked {
        return Err(Denial::Locked);
    }
    if r.mfa_required && !r.mfa_presented {
        return Err(Denial::MfaRequired);
    }
    if !r.granted {
        return Err(Denial::NotGranted);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use PasswordStatus::*;
    use State::*;

    fn req(state: State, password: PasswordStatus, locked: bool, mfa: (bool, bool), granted: bool) -> AccessRequest {
        AccessRequest { state, password, delegated: false, locked, mfa_required: mfa.0, mfa_presented: mfa.1, granted }
    }

    /// Every combination of state × password status × locked × MFA × granted, with the
    /// expected answer written out as the rule reads.
    #[test]
    fn access_table() {
        let mut rows = 0;
        for state in [Staged, Activated, Suspended] {
            for password in [Pending, Active, Expired] {
                for locked in [false, true] {
                    for mfa in [(false, false), (true, false), (true, true)] {
                        for granted in [false, true] {
                            let expected = if state != Activated {
                                Err(Denial::NotActive)
                            } else if password == Pending {
                                Err(Denial::PasswordPending)
                            } else if password == Expired {
                                Err(Denial::PasswordExpired)
                            } else if locked {
                                Err(Denial::Locked)
                            } else if mfa == (true, false) {
                                Err(Denial::MfaRequired)
                            } else if !granted {
                                Err(Denial::NotGranted)
                            } else {
                                Ok(())
                            };
                            let r = req(state, password, locked, mfa, granted);
                            assert_eq!(decide(&r), expected, "{r:?}");
                            rows += 1;
                        }
                    }
                }
            }
        }
        assert_eq!(rows, 108);
    }

    #[test]
    fn only_one_combination_per_state_and_password_is_allowed() {
        let allowed =
            [(Activated, Active, false, (false, false), true), (Activated, Active, false, (true, true), true)];
        for (s, p, l, m, g) in allowed {
            assert_eq!(decide(&req(s, p, l, m, g)), Ok(()));
        }
        // A staged user with a password and everything else in order still gets nothing.
        assert_eq!(decide(&req(Staged, Active, false, (false, false), true)), Err(Denial::NotActive));
        // A suspended user keeps a valid password but gets nothing.
        assert_eq!(decide(&req(Suspended, Active, false, (true, true), true)), Err(Denial::NotActive));
    }

    /// Every protocol × request × enrolment: the web protocols turn an expired password and
    /// a missing second factor into steps, in that order of precedence: second factor first.
    #[test]
    fn verdict_table() {
        let protocols = [Protocol::Portal, Protocol::AdminPortal, Protocol::Ldap, Protocol::Radius, Protocol::Oidc];
        for p in protocols {
            for state in [Staged, Activated, Suspended] {
                for password in [Pending, Active, Expired] {
                    for locked in [false, true] {
                        for mfa in [(false, false), (true, false), (true, true)] {
                            for granted in [false, true] {
                                for enrolled in [false, true] {
                                    let r = req(state, password, locked, mfa, granted);
                                    // Written out as the rule reads: every refusal but MFA first, with
                                    // an expired password as good as active on the web.
                                    let web_expired = p.web() && password == Expired;
                                    let mfa_missing = mfa == (true, false);
                                    let expected = if state != Activated {
                                        Verdict::Deny(Denial::NotActive)
                                    } else if password == Pending {
                                        Verdict::Deny(Denial::PasswordPending)
                                    } else if password == Expired && !p.web() {
                                        Verdict::Deny(Denial::PasswordExpired)
                                    } else if locked {
                                        Verdict::Deny(Denial::Locked)
                                    } else if !granted {
                                        Verdict::Deny(Denial::NotGranted)
                                    } else if mfa_missing && enrolled && p != Protocol::Ldap {
                                        Verdict::Step(Step::SecondFactor)
                                    } else if web_expired {
                                        Verdict::Step(Step::ChangePassword)
                                    } else if mfa_missing && !enrolled && p.web() {
                                        Verdict::Step(Step::Enroll)
                                    } else if mfa_missing {
                                        Verdict::Deny(Denial::MfaRequired)
                                    } else {
                                        Verdict::Allow
                                    };
                                    assert_eq!(verdict(&r, p, enrolled), expected, "{p:?} {r:?} enrolled={enrolled}");
                                }
                            }
                        }
                    }
                }
            }
        }
    }

    #[test]
    fn an_expired_password_of_an_enrolled_user_asks_for_the_code_before_the_change() {
        let r = req(Activated, Expired, false, (true, false), true);
        assert_eq!(verdict(&r, Protocol::Portal, true), Verdict::Step(Step::SecondFactor));
        let r = req(Activated, Expired, false, (true, true), true);
        assert_eq!(verdict(&r, Protocol::Portal, true), Verdict::Step(Step::ChangePassword));
        // LDAP and RADIUS cannot change a password: refused.
        assert_eq!(verdict(&r, Protocol::Ldap, true), Verdict::Deny(Denial::PasswordExpired));
        assert_eq!(verdict(&r, Protocol::Radius, true), Verdict::Deny(Denial::PasswordExpired));
        // A locked or ungranted account gets no change form either.
        let r = req(Activated, Expired, true, (false, false), true);
        assert_eq!(verdict(&r, Protocol::Portal, false), Verdict::Deny(Denial::Locked));
        let r = req(Activated, Expired, false, (false, false), false);
        assert_eq!(verdict(&r, Protocol::Oidc, false), Verdict::Deny(Denial::NotGranted));
        // Nor does a step lead round a grant: no enrolment for an application not granted.
        let r = req(Activated, Active, false, (true, false), false);
        assert_eq!(verdict(&r, Protocol::Oidc, false), Verdict::Deny(Denial::NotGranted));
        let r = req(Activated, Expired, false, (true, false), false);
        assert_eq!(verdict(&r, Protocol::Oidc, false), Verdict::Deny(Denial::NotGranted));
    }

    #[test]
    fn delegated_users_do_not_need_a_local_password() {
        let mut r = req(Activated, Pending, false, (false, false), true);
        r.delegated = true;
        assert_eq!(decide(&r), Ok(()));
        r.state = Suspended;
        assert_eq!(decide(&r), Err(Denial::NotActive));
    }
}
