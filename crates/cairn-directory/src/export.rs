//! Export (§6): every user matching a list query, streamed as CSV or JSON. CSV cells that a
//! spreadsheet would run as a formula are defused; secrets never appear (users' JSON carries
//! none).

use cairn_domain::query::ListQuery;
use cairn_domain::user::project;
use cairn_domain::User;
use serde_json::Value;
use tokio::sync::mpsc;

use crate::error::{Error, Result};
use crate::Directory;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExportFormat {
    Csv,
    Json,
}

impl ExportFormat {
    pub fn parse(s: &str) -> Option<ExportFormat> {
        match s.to_lowercase().as_str() {
            "csv" => Some(ExportFormat::Csv),
            "json" => Some(ExportFormat::Json),
            _ => None,
        }
    }
    pub fn content_type(self) -> &'static str {
        match self {
            ExportFormat::Csv => "text/csv; charset=utf-8",
            ExportFormat::Json => "application/json",
        }
    }
}

/// The CSV columns when none are asked for: the import template's, so an export re-imports.
pub const DEFAULT_FIELDS: &[&str] = &[
    "_id",
    "username",
    "email",
    "firstname",
    "middlename",
    "lastname",
    "displayname",
    "alternateEmail",
    "jobTitle",
    "employeeIdentifier",
    "department",
    "costCenter",
    "company",
    "employeeType",
    "location",
    "description",
    "manager",
    "state",
    "activated",
    "password_expired",
    "account_locked",
    "enable_user_portal_multifactor",
    "totp_enabled",
    "unix_uid",
    "unix_guid",
    "created",
];

/// A cell a spreadsheet would evaluate (`= + - @`, tab, CR) gets a leading `'`.
pub fn defuse(cell: &str) -> String {
    match cell.chars().next() {
        Some('=' | '+' | '-' | '@' | '\t' | '\r') => format!("'{cell}"),
        _ => cell.to_string(),
    }
}

fn cell(v: Option<&Value>) -> String {
    match v {
        None | Some(Value::Null) => String::new(),
        Some(Value::String(s)) => s.clone(),
        Some(Value::Bool(b)) => b.to_string(),
        Some(Value::Number(n)) => n.to_string(),
        Some(other) => other.to_string(),
    }
}

/// Turns users into the bytes of an export, one chunk at a time.
pub struct Exporter {
    format: ExportFormat,
    fields: Vec<String>,
    org: String,
    first: bool,
}

impl Exporter {
    pub fn new(format: ExportFormat, fields: Option<Vec<String>>, org: String) -> Exporter {
        let fields = fields.unwrap_or_else(|| DEFAULT_FIELDS.iter().map(|s| s.to_string()).collect());
        Exporter { format, fields, org, first: true }
    }

    fn csv_line(cells: impl IntoIterator<Item = String>) -> String {
        let mut w = csv::WriterBuilder::new().terminator(csv::Terminator::CRLF).from_writer(vec![]);
        w.write_record(cells).expect("writing to memory");
        String::from_utf8(w.into_inner().expect("flush to memory")).expect("UTF-8 in, UTF-8 out")
    }

    pub fn header(&mut self) -> String {
        match self.format {
            ExportFormat::Csv => Self::csv_line(self.fields.iter().map(|f| defuse(f))),
            ExportFormat::Json => "[".into(),
        }
    }

    pub fn row(&mut self, u: &User) -> String {
        let m = u.to_json(&self.org);
        match self.format {
            ExportFormat::Csv => Self::csv_line(self.fields.iter().map(|f| defuse(&cell(m.get(f))))),
            ExportFormat::Json => {
                let obj = Value::Object(project(m, Some(&self.fields)));
                let sep = if std::mem::take(&mut self.first) { "\n" } else { ",\n" };
                format!("{sep}{obj}")
            }
        }
    }

    pub fn footer(&mut self) -> String {
        match self.format {
            ExportFormat::Csv => String::new(),
            ExportFormat::Json => "\n]\n".into(),
        }
    }
}

impl Directory {
    /// Every user matching `q` (its page bounds ignored), streamed through a bounded channel.
    pub fn export_users(&self, q: ListQuery) -> mpsc::Receiver<Result<User>> {
        let (tx, rx) = mpsc::channel(512);
        let store = self.store().clone();
        tokio::spawn(async move {
            let (inner_tx, mut inner_rx) = mpsc::channel::<cairn_store::Result<User>>(512);
            let forward = {
                let tx = tx.clone();
                tokio::spawn(async move {
                    while let Some(r) = inner_rx.recv().await {
                        if tx.send(r.map_err(Error::from)).await.is_err() {
                            break;
                        }
                    }
                })
            };
            let res = match store.read().await {
                Ok(mut c) => c.db().each_user(&q, &inner_tx).await,
                Err(e) => Err(e),
            };
            drop(inner_tx);
            let _ = forward.await;
            if let Err(e) = res {
                let _ = tx.send(Err(Error::from(e))).await;
            }
        });
        rx
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formulas_are_defused() {
        for bad in ["=SUM(A1)", "+1", "-2", "@cmd", "\tx", "\rx"] {
            assert!(defuse(bad).starts_with('\''), "{bad:?}");
        }
        assert_eq!(defuse("ada"), "ada");
        assert_eq!(defuse(""), "");
    }
}
