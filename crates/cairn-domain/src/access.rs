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

    #[test]
    fn delegated_users_do_not_need_a_local_password() {
        let mut r = req(Activated, Pending, false, (false, false), true);
        r.delegated = true;
        assert_eq!(decide(&r), Ok(()));
        r.state = Suspended;
        assert_eq!(decide(&r), Err(Denial::NotActive));
    }
}
