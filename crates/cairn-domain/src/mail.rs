//! Which message goes to whom (§5.2), and what it says. Pure: the directory writes the
//! result to the outbox in the transaction of the change that caused it.

use serde::{Deserialize, Serialize};

use crate::lifecycle::MailChoice;
use crate::user::{State, User};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum MailKind {
    Welcome,
    Activation,
    PasswordReset,
    TotpReset,
}

impl MailKind {
    pub fn as_str(self) -> &'static str {
        match self {
            MailKind::Welcome => "welcome",
            MailKind::Activation => "activation",
            MailKind::PasswordReset => "password_reset",
            MailKind::TotpReset => "totp_reset",
        }
    }
    pub fn parse(s: &str) -> Option<MailKind> {
        Some(match s {
            "welcome" => MailKind::Welcome,
            "activation" => MailKind::Activation,
            "password_reset" => MailKind::PasswordReset,
            "totp_reset" => MailKind::TotpReset,
            _ => return None,
        })
    }
}

/// The mail an activation (or a creation in ACTIVATED) sends: welcome when the password is
/// set, activation when it is pending; `None` when the flag says no mail or the user is not
/// ACTIVATED (a staged user receives nothing).
pub fn on_activation(user: &User, choice: &MailChoice) -> Option<(MailKind, String)> {
    if user.state != State::Activated {
        return None;
    }
    let over = match choice {
        MailChoice::None => return None,
        MailChoice::Default | MailChoice::Yes => None,
        MailChoice::To(a) => Some(a.clone()),
    };
    if user.activated() {
        Some((MailKind::Welcome, over.unwrap_or_else(|| user.email.clone())))
    } else {
        let alternate = user.text("alternateEmail").filter(|a| !a.is_empty()).map(String::from);
        Some((MailKind::Activation, over.or(alternate).unwrap_or_else(|| user.email.clone())))
    }
}

/// A composed message: plain text and HTML.
#[derive(Debug, Clone, PartialEq)]
pub struct Composed {
    pub subject: String,
    pub text: String,
    pub html: String,
}

fn escape(s: &str) -> String {
    s.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;").replace('"', "&quot;").replace('\'', "&#39;")
}

/// The person's name as the message greets them.
pub fn display_name(user: &User) -> String {
    let first = user.text("firstname").unwrap_or("");
    let last = user.text("lastname").unwrap_or("");
    let full = format!("{first} {last}").trim().to_string();
    if let Some(d) = user.text("displayname").filter(|d| !d.is_empty()) {
        d.to_string()
    } else if full.is_empty() {
        user.username.clone()
    } else {
        full
    }
}

/// What a message's template needs: all an outbox row keeps of a new message (a few hundred
/// bytes, against about 1.2 KB composed), so it is rendered when read or sent.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MailParams {
    #[serde(rename = "u")]
    pub username: String,
    #[serde(rename = "n")]
    pub name: String,
    #[serde(rename = "o")]
    pub org: String,
    /// The portal URL with its one-time token where there is one.
    #[serde(rename = "l")]
    pub link: String,
    /// "7 days", "1 hour"; empty where the link does not expire.
    #[serde(rename = "v")]
    pub valid_for: String,
}

impl MailParams {
    pub fn new(org: &str, user: &User, link: &str, valid_for: &str) -> MailParams {
        MailParams {
            username: user.username.clone(),
            name: display_name(user),
            org: org.into(),
            link: link.into(),
            valid_for: valid_for.into(),
        }
    }
}

/// Writes the message; `link` is the portal URL with its one-time token where there is one.
pub fn compose(kind: MailKind, org: &str, user: &User, link: &str, valid_for: &str) -> Composed {
    render(kind, &MailParams::new(org, user, link, valid_for))
}

/// Writes the message from its parameters.
pub fn render(kind: MailKind, p: &MailParams) -> Composed {
    let (org, name, username, valid_for, link) = (&p.org, &p.name, &p.username, &p.valid_for, p.link.as_str());
    let (subject, lead, action) = match kind {
        MailKind::Welcome => (
            format!("Welcome to {org}"),
            format!("your {org} account ({}) is active. Sign in to the user portal with your username and password.", username),
            "Open the user portal",
        ),
        MailKind::Activation => (
            format!("Activate your {org} account"),
            format!("an account ({}) has been created for you at {org}. Choose your password to activate it. The link is valid for {valid_for} and can be used once.", username),
            "Choose your password",
        ),
        MailKind::PasswordReset => (
            format!("Reset your {org} password"),
            format!("a password reset was requested for your {org} account ({}). The link is valid for {valid_for} and can be used once. If you did not ask for this, ignore this message: your password stays as it is.", username),
            "Choose a new password",
        ),
        MailKind::TotpReset => (
            format!("Your {org} two-factor authentication was reset"),
            format!("an administrator reset the authenticator (TOTP) of your {org} account ({}). Sign in to the user portal to enrol your authenticator app again.", username),
            "Sign in and enrol again",
        ),
    };
    let text = format!("Hello {name},\n\n{lead}\n\n{action}: {link}\n\n-- \n{org}\n");
    let html = format!(
        "<!doctype html><html><body style=\"font-family:sans-serif\"><p>Hello {n},</p><p>{l}</p>\
         <p><a href=\"{u}\" style=\"display:inline-block;padding:8px 14px;background:#2c5282;color:#fff;text-decoration:none;border-radius:4px\">{a}</a></p>\
         <p style=\"color:#555;font-size:90%\">Or paste this address into your browser: {u}</p><p style=\"color:#555\">{o}</p></body></html>",
        n = escape(name),
        l = escape(&lead),
        u = escape(link),
        a = escape(action),
        o = escape(org),
    );
    Composed { subject, text, html }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::Utc;
    use serde_json::json;

    fn user(state: State, password: bool, alternate: Option<&str>) -> User {
        let mut profile = serde_json::Map::new();
        if let Some(a) = alternate {
            profile.insert("alternateEmail".into(), json!(a));
        }
        profile.insert("firstname".into(), json!("Ada"));
        User {
            password_hash: password.then(|| crate::Secret::new("h")),
            profile,
            ..User::new("0".repeat(24), "ada", "ada@example.com", state, Utc::now())
        }
    }

    #[test]
    fn the_table_of_section_5_2() {
        let to = |a: &str| MailChoice::To(a.to_string());
        let (dflt, none) = (MailChoice::Default, MailChoice::None);
        let cases = [
            // (state, password set, alternateEmail, flag) → message
            (State::Activated, true, None, dflt.clone(), Some((MailKind::Welcome, "ada@example.com"))),
            (State::Activated, true, Some("alt@x.io"), dflt.clone(), Some((MailKind::Welcome, "ada@example.com"))),
            (State::Activated, true, None, to("over@x.io"), Some((MailKind::Welcome, "over@x.io"))),
            (State::Activated, false, None, dflt.clone(), Some((MailKind::Activation, "ada@example.com"))),
            (State::Activated, false, Some("alt@x.io"), dflt.clone(), Some((MailKind::Activation, "alt@x.io"))),
            (State::Activated, false, Some("alt@x.io"), to("over@x.io"), Some((MailKind::Activation, "over@x.io"))),
            (State::Activated, false, None, none.clone(), None),
            (State::Activated, true, None, none.clone(), None),
            (State::Staged, false, None, dflt.clone(), None),
            (State::Staged, true, None, to("over@x.io"), None),
            (State::Suspended, true, None, dflt.clone(), None),
        ];
        for (state, pw, alt, flag, expected) in cases {
            let got = on_activation(&user(state, pw, alt), &flag);
            assert_eq!(got, expected.map(|(k, a)| (k, a.to_string())), "{state} pw={pw} alt={alt:?} {flag:?}");
        }
    }

    #[test]
    fn messages_name_the_organization_and_the_user_and_escape_html() {
        let mut u = user(State::Activated, false, None);
        u.profile.insert("lastname".into(), json!("<Lovelace>"));
        let m = compose(MailKind::Activation, "Acme & Co", &u, "https://id.acme/portal/activate?token=abc", "7 days");
        assert!(m.subject.contains("Acme & Co"));
        assert!(
            m.text.contains("Hello Ada <Lovelace>") && m.text.contains("https://id.acme/portal/activate?token=abc")
        );
        assert!(m.html.contains("Ada &lt;Lovelace&gt;") && m.html.contains("Acme &amp; Co"));
        assert!(!m.html.contains("<Lovelace>"));
    }
}
