//! The password policy of §3.5, as a pure check.

use crate::settings::PasswordPolicy;

pub const MAX_PASSWORD_LEN: usize = 256;

/// Checks a candidate password against the policy; the error is a sentence for the user.
pub fn check_password(policy: &PasswordPolicy, password: &str) -> Result<(), String> {
    let n = password.chars().count();
    if n < policy.min_length as usize {
        return Err(format!(
            "must be at least {} characters long",
            policy.min_length
        ));
    }
    if n > MAX_PASSWORD_LEN {
        return Err(format!(
            "must be at most {MAX_PASSWORD_LEN} characters long"
        ));
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
}
