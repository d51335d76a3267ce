//! Lockout (§3.5): consecutive failed sign-ins lock an account, for users and administrators
//! alike and across every protocol and both factors (a wrong password and a wrong TOTP code
//! count the same). A small state machine, after kanidm's `CredSoftLock`; NIST SP 800-63B
//! §5.2.2 asks for exactly this kind of limit on consecutive failed attempts.
//!
//! ```text
//!   open(n) ── failure, n+1 < max ──────────────────────▶ open(n+1)
//!   open(n) ── failure, n+1 = max ──────────────────────▶ locked(now)
//!   open(n) ── whole authentication succeeded ──────────▶ open(0)
//!   open(n) ── password right, second factor pending ───▶ open(n)   (not reset: the code
//!                                                                   is still to be guessed)
//!   locked(t) ── now ≥ t + unlock_after (when set) ─────▶ open(0)
//!   locked(t) ── any attempt, right or wrong ───────────▶ locked(t) (refused, not counted)
//!   any ── admin unlock ────────────────────────────────▶ open(0)
//! ```
//! Callers hold the row locked while they read a `Lockout`, apply one transition and write it
//! back, so concurrent failures count one each and never overwrite other columns.

use chrono::{DateTime, Duration, Utc};

use crate::settings::PasswordPolicy;

/// The limits of the organization's password policy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LockPolicy {
    /// Consecutive failures that lock (at least 1).
    pub max_failures: u32,
    /// A lock ends by itself after this long; `None`: only an admin unlocks.
    pub unlock_after: Option<Duration>,
}

impl From<&PasswordPolicy> for LockPolicy {
    fn from(p: &PasswordPolicy) -> LockPolicy {
        LockPolicy {
            max_failures: p.max_login_attempts.max(1),
            unlock_after: p.lockout_time_in_seconds.map(|s| Duration::seconds(s.min(i64::MAX as u64 / 1000) as i64)),
        }
    }
}

/// The lockout columns of an account, as stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Lockout {
    pub failures: i64,
    pub locked: bool,
    /// When it locked; `None` for a lock set without a time (it never ends by itself).
    pub locked_at: Option<DateTime<Utc>>,
}

impl Lockout {
    /// The open state with no failure counted.
    pub const OPEN: Lockout = Lockout { failures: 0, locked: false, locked_at: None };

    /// The state as of `now`: a lock whose time has run out is open again.
    pub fn current(self, p: &LockPolicy, now: DateTime<Utc>) -> Lockout {
        match (self.locked, self.locked_at, p.unlock_after) {
            (true, Some(at), Some(after)) if now >= at + after => Lockout::OPEN,
            _ => self,
        }
    }

    pub fn is_locked(&self, p: &LockPolicy, now: DateTime<Utc>) -> bool {
        self.current(p, now).locked
    }

    /// One failed attempt (wrong password or wrong second factor). Locked accounts do not
    /// count further attempts, so the lock time is that of the failure that locked.
    pub fn fail(self, p: &LockPolicy, now: DateTime<Utc>) -> Lockout {
        let cur = self.current(p, now);
        if cur.locked {
            return cur;
        }
        let failures = cur.failures.saturating_add(1);
        if failures >= i64::from(p.max_failures) {
            Lockout { failures, locked: true, locked_at: Some(now) }
        } else {
            Lockout { failures, ..cur }
        }
    }

    /// The whole authentication succeeded (password and, where required, second factor).
    /// A locked account cannot succeed: its attempts are refused before they get here.
    pub fn succeed(self, p: &LockPolicy, now: DateTime<Utc>) -> Lockout {
        let cur = self.current(p, now);
        if cur.locked {
            cur
        } else {
            Lockout::OPEN
        }
    }

    /// When this lock ends by itself, if it does.
    pub fn unlocks_at(&self, p: &LockPolicy) -> Option<DateTime<Utc>> {
        match (self.locked, self.locked_at, p.unlock_after) {
            (true, Some(at), Some(after)) => Some(at + after),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(s: i64) -> DateTime<Utc> {
        DateTime::from_timestamp(1_800_000_000 + s, 0).unwrap()
    }

    fn policy(max: u32, unlock: Option<i64>) -> LockPolicy {
        LockPolicy { max_failures: max, unlock_after: unlock.map(Duration::seconds) }
    }

    #[test]
    fn a_failure_below_the_limit_counts_one() {
        let p = policy(3, None);
        let l = Lockout::OPEN.fail(&p, t(0));
        assert_eq!(l, Lockout { failures: 1, locked: false, locked_at: None });
        assert_eq!(l.fail(&p, t(1)), Lockout { failures: 2, locked: false, locked_at: None });
    }

    #[test]
    fn the_failure_that_reaches_the_limit_locks_at_its_time() {
        let p = policy(3, None);
        let l = Lockout { failures: 2, ..Lockout::OPEN }.fail(&p, t(5));
        assert_eq!(l, Lockout { failures: 3, locked: true, locked_at: Some(t(5)) });
        assert!(l.is_locked(&p, t(1_000_000)));
        assert_eq!(l.unlocks_at(&p), None);
    }

    #[test]
    fn a_limit_of_one_locks_on_the_first_failure() {
        let l = Lockout::OPEN.fail(&policy(1, None), t(0));
        assert!(l.locked);
    }

    #[test]
    fn success_resets_the_counter() {
        let p = policy(3, None);
        assert_eq!(Lockout { failures: 2, ..Lockout::OPEN }.succeed(&p, t(0)), Lockout::OPEN);
    }

    #[test]
    fn a_locked_account_neither_counts_nor_resets() {
        let p = policy(3, Some(60));
        let locked = Lockout { failures: 3, locked: true, locked_at: Some(t(0)) };
        assert_eq!(locked.fail(&p, t(10)), locked);
        assert_eq!(locked.succeed(&p, t(10)), locked);
    }

    #[test]
    fn a_lock_ends_by_itself_once_its_time_is_over() {
        let p = policy(3, Some(60));
        let locked = Lockout { failures: 3, locked: true, locked_at: Some(t(0)) };
        assert!(locked.is_locked(&p, t(59)));
        assert!(!locked.is_locked(&p, t(60)));
        assert_eq!(locked.current(&p, t(60)), Lockout::OPEN);
        assert_eq!(locked.unlocks_at(&p), Some(t(60)));
        // The first failure after the lock ended counts from zero again.
        assert_eq!(locked.fail(&p, t(61)), Lockout { failures: 1, locked: false, locked_at: None });
    }

    #[test]
    fn a_lock_without_a_time_or_without_auto_unlock_stays() {
        let undated = Lockout { failures: 0, locked: true, locked_at: None };
        assert!(undated.is_locked(&policy(3, Some(1)), t(1_000_000)));
        let dated = Lockout { failures: 3, locked: true, locked_at: Some(t(0)) };
        assert!(dated.is_locked(&policy(3, None), t(1_000_000)));
    }

    #[test]
    fn the_policy_reads_the_settings() {
        let mut s = PasswordPolicy::default();
        assert_eq!(LockPolicy::from(&s), policy(10, None));
        s.lockout_time_in_seconds = Some(300);
        s.max_login_attempts = 0;
        assert_eq!(LockPolicy::from(&s), policy(1, Some(300)));
    }
}
