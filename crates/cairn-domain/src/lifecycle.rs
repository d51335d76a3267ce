//! State transitions (§3.3).

use crate::error::DomainError;
use crate::user::State;

/// Whether moving from `from` to `to` changes anything; moving to STAGED is refused
/// (a user is staged only at creation).
pub fn transition(from: State, to: State) -> Result<bool, DomainError> {
    if from == to {
        return Ok(false);
    }
    if to == State::Staged {
        return Err(DomainError::Refused(format!(
            "a {from} user cannot be moved back to STAGED: users are staged only at creation"
        )));
    }
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;
    use State::*;

    #[test]
    fn transition_table() {
        for (from, to, expect) in [
            (Staged, Activated, Ok(true)),
            (Staged, Suspended, Ok(true)),
            (Activated, Suspended, Ok(true)),
            (Suspended, Activated, Ok(true)),
            (Activated, Activated, Ok(false)),
            (Suspended, Suspended, Ok(false)),
            (Staged, Staged, Ok(false)),
            (Activated, Staged, Err(())),
            (Suspended, Staged, Err(())),
        ] {
            assert_eq!(
                transition(from, to).map_err(|_| ()),
                expect,
                "{from} -> {to}"
            );
        }
    }
}
