//! The password policy of §3.5, as a pure check.

use std::collections::HashSet;
use std::sync::LazyLock;

use crate::settings::PasswordPolicy;

/// Django's list of the 19,640 most common passwords (see `data/NOTICE`), compared
/// case-insensitively.
static COMMON: LazyLock<HashSet<&'static str>> =
    LazyLock::new(|| include_str!("../data/common-passwords.txt").lines().filter(|l| !l.is_empty()).collect());

pub fn is_common(password: &str) -> bool {
    COMMON.contains(password.to_lowercase().trim())
}

pub const MAX_PASSWORD_LEN: usize = 256;

/// Checks a candidate password against the policy; the error is a sentence for the user.
pub fn check_password(policy: &PasswordPolicy, password: &str) -> Result<(), String> {
    let n = password.chars().count();
    if n < policy.min_length as usize {
        return Err(format!("must be at least {} characters long", policy.min_length));
    }
    if n > MAX_PASSWORD_LEN {
        return Err(format!("must be at most {MAX_PASSWORD_LEN} characters long"));
    }
    if policy.disallow_commonly_used_passwords && is_common(password) {
        return Err("is one of the most commonly used passwords; choose another".into());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn length_bounds() {
        let p = PasswordPolicy::default();
        assert!(check_password(&p, "short").is_err());
        assert!(check_password(&p, "a long enough passphrase").is_ok());
        assert!(check_password(&p, &"x".repeat(257)).is_err());
    }

    #[test]
    fn common_passwords_are_refused_when_the_policy_says_so() {
        let mut p = PasswordPolicy { min_length: 8, ..PasswordPolicy::default() };
        assert!(is_common("password") && is_common("Qwerty123"));
        assert!(check_password(&p, "password1").is_err());
        assert!(check_password(&p, "PASSWORD1").is_err(), "case does not matter");
        assert!(check_password(&p, "violet-otter-harbour").is_ok());
        p.disallow_commonly_used_passwords = false;
        assert!(check_password(&p, "password1").is_ok());
    }
}
