//! The outbox worker (§5.1): delivers queued messages over SMTP with retries and backoff.
//! A message is claimed (committed as `sending`) before it is sent, so two processes never
//! send the same one; a claim whose process died is failed, not resent: at most once.

use std::time::Duration as StdDuration;

use cairn_domain::OutboxMessage;
use chrono::Duration;
use lettre::message::{Mailbox, MultiPart};
use lettre::transport::smtp::authentication::Credentials;
use lettre::{AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor};

use crate::config::{Smtp, Tls};
use crate::error::{Error, Result};
use crate::Directory;

const MAX_ATTEMPTS: i64 = 5;
const LEASE: Duration = Duration::minutes(2);
const BATCH: i64 = 20;

/// The stored copy of a sent message keeps no usable token.
pub fn scrub(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(i) = rest.find("token=") {
        out.push_str(&rest[..i + 6]);
        rest = &rest[i + 6..];
        let end = rest.find(|c: char| !(c.is_ascii_alphanumeric() || c == '-' || c == '_')).unwrap_or(rest.len());
        out.push_str("[redacted]");
        rest = &rest[end..];
    }
    out.push_str(rest);
    out
}

/// The stored copy of a sent message, its link's token redacted: the parameters of a message
/// rendered when sent, or the bodies of one stored composed.
fn scrubbed(m: &OutboxMessage) -> OutboxMessage {
    let mut s = m.clone();
    match &mut s.params {
        Some(p) => p.link = scrub(&p.link),
        None => (s.text, s.html) = (scrub(&m.text), scrub(&m.html)),
    }
    s
}

fn transport(s: &Smtp) -> Result<AsyncSmtpTransport<Tokio1Executor>> {
    let bad = |e: lettre::transport::smtp::Error| Error::Internal(format!("SMTP setup for {}: {e}", s.host));
    let mut b = match s.tls {
        Tls::None => AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(&s.host),
        Tls::StartTls => AsyncSmtpTransport::<Tokio1Executor>::starttls_relay(&s.host).map_err(bad)?,
        Tls::Wrapper => AsyncSmtpTransport::<Tokio1Executor>::relay(&s.host).map_err(bad)?,
    }
    .port(s.port)
    .timeout(Some(StdDuration::from_secs(30)));
    if let Some(u) = &s.user {
        b = b.credentials(Credentials::new(u.clone(), s.password.clone().unwrap_or_default()));
    }
    Ok(b.build())
}

fn build(from: &str, m: &OutboxMessage) -> std::result::Result<Message, String> {
    let from: Mailbox = from.parse().map_err(|e| format!("CAIRN_MAIL_FROM '{from}': {e}"))?;
    let to: Mailbox = m.to.parse().map_err(|e| format!("recipient '{}': {e}", m.to))?;
    let c = m.rendered();
    Message::builder()
        .from(from)
        .to(to)
        .subject(c.subject)
        .multipart(MultiPart::alternative_plain_html(c.text, c.html))
        .map_err(|e| e.to_string())
}

impl Directory {
    /// One delivery pass; how many messages were attempted.
    pub async fn deliver_mail(&self) -> Result<usize> {
        let Some(smtp) = self.config().smtp.clone() else { return Ok(0) };
        let now = self.now();
        let claimed = {
            let mut tx = self.store().begin().await?;
            tx.db().fail_abandoned_messages(now).await?;
            let c = tx.db().claim_messages(now, now + LEASE, BATCH).await?;
            tx.commit().await?;
            c
        };
        if claimed.is_empty() {
            return Ok(0);
        }
        let transport = transport(&smtp)?;
        for m in &claimed {
            let result = match build(&self.config().mail_from, m) {
                Ok(msg) => transport.send(msg).await.map(|_| ()).map_err(|e| (e.is_permanent(), e.to_string())),
                Err(e) => Err((true, e)),
            };
            let now = self.now();
            let mut tx = self.store().begin().await?;
            match result {
                Ok(()) => {
                    tx.db().finish_message(&m.id, "sent", now, now, None, Some(&scrubbed(m))).await?;
                    metrics::counter!("cairn_mail_total", "outcome" => "sent").increment(1);
                }
                Err((permanent, e)) if permanent || m.attempts >= MAX_ATTEMPTS => {
                    tracing::warn!(to = %m.to, error = %e, "mail delivery failed for good");
                    tx.db().finish_message(&m.id, "failed", now, now, Some(&e), None).await?;
                    metrics::counter!("cairn_mail_total", "outcome" => "failed").increment(1);
                }
                Err((_, e)) => {
                    let backoff = Duration::seconds(5 * (1 << (m.attempts - 1).clamp(0, 8)));
                    tracing::info!(to = %m.to, error = %e, retry_in = backoff.num_seconds(), "mail delivery failed; will retry");
                    tx.db().finish_message(&m.id, "queued", now, now + backoff, Some(&e), None).await?;
                }
            }
            tx.commit().await?;
        }
        Ok(claimed.len())
    }

    /// Runs delivery until `stop` changes. Does nothing without SMTP.
    pub async fn run_mailer(&self, mut stop: tokio::sync::watch::Receiver<bool>) {
        if self.config().smtp.is_none() {
            return;
        }
        loop {
            let pause = match self.deliver_mail().await {
                Ok(n) if n as i64 >= BATCH => StdDuration::ZERO,
                Ok(_) => StdDuration::from_millis(500),
                Err(e) => {
                    tracing::warn!(error = %e, "mail pass failed; retrying");
                    StdDuration::from_secs(2)
                }
            };
            tokio::select! {
                _ = tokio::time::sleep(pause) => {}
                _ = stop.changed() => return,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn tokens_are_scrubbed_from_sent_copies() {
        assert_eq!(
            super::scrub("go to http://x/portal/activate?token=abc-DEF_123 now, or token=zz."),
            "go to http://x/portal/activate?token=[redacted] now, or token=[redacted]."
        );
        assert_eq!(super::scrub("no link"), "no link");
    }
}
