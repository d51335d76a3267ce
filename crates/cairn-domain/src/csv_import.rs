//! CSV import (§6), the pure part: reading records (UTF-8 with or without BOM, RFC 4180
//! quoting, CRLF or LF), mapping JumpCloud PowerShell template columns (case-insensitive) to
//! the user record, and validating each record on its own.

use std::collections::HashMap;

use serde_json::{json, Map, Value};

use crate::user::{parse_user_object, UserInput};
use crate::DomainError;

/// Longest accepted record, in bytes.
pub const MAX_RECORD_BYTES: usize = 64 * 1024;

/// What a column holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Column {
    /// A field of the systemuserputpost body (its JSON name).
    Field(&'static str),
    Password,
    State,
    Manager,
    /// `phoneNumbers` entry of this type.
    Phone(&'static str),
    /// `addresses` entry of this type, property.
    Address(&'static str, &'static str),
    AttributeName(u32),
    AttributeValue(u32),
    /// Not a known column: a group of that name if one exists, else unknown.
    Other(String),
}

fn classify(header: &str) -> Column {
    let h = header.trim().to_lowercase();
    let field = |n: &'static str| Column::Field(n);
    match h.as_str() {
        "username" => field("username"),
        "email" => field("email"),
        "firstname" | "first_name" => field("firstname"),
        "lastname" | "last_name" => field("lastname"),
        "middlename" | "middle_name" => field("middlename"),
        "displayname" | "display_name" => field("displayname"),
        "alternateemail" => field("alternateEmail"),
        "jobtitle" => field("jobTitle"),
        "employeeidentifier" => field("employeeIdentifier"),
        "department" => field("department"),
        "costcenter" => field("costCenter"),
        "company" => field("company"),
        "employeetype" => field("employeeType"),
        "description" => field("description"),
        "location" => field("location"),
        "unix_uid" => field("unix_uid"),
        "unix_guid" => field("unix_guid"),
        "enable_user_portal_multifactor" => field("enable_user_portal_multifactor"),
        "password_never_expires" => field("password_never_expires"),
        "sudo" => field("sudo"),
        "password" => Column::Password,
        "state" => Column::State,
        "manager" => Column::Manager,
        "mobile_number" | "mobilenumber" => Column::Phone("mobile"),
        "home_number" | "homenumber" => Column::Phone("home"),
        "work_number" | "worknumber" => Column::Phone("work"),
        "work_mobile_number" | "workmobilenumber" => Column::Phone("work_mobile"),
        "work_fax_number" | "workfaxnumber" => Column::Phone("work_fax"),
        _ => {
            for (kind, rest) in [("home", h.strip_prefix("home_")), ("work", h.strip_prefix("work_"))] {
                let prop = match rest {
                    Some("streetaddress") => "streetAddress",
                    Some("pobox") => "poBox",
                    Some("city" | "locality") => "locality",
                    Some("state" | "region") => "region",
                    Some("postalcode") => "postalCode",
                    Some("country") => "country",
                    Some("extendedaddress") => "extendedAddress",
                    _ => continue,
                };
                return Column::Address(kind, prop);
            }
            if let Some(rest) = h.strip_prefix("attribute") {
                if let Some((n, kind)) = rest.split_once('_') {
                    if let Ok(n) = n.parse::<u32>() {
                        match kind {
                            "name" => return Column::AttributeName(n),
                            "value" => return Column::AttributeValue(n),
                            _ => {}
                        }
                    }
                }
            }
            Column::Other(header.trim().to_string())
        }
    }
}

/// The header, classified.
#[derive(Debug, Clone)]
pub struct Header {
    pub names: Vec<String>,
    pub columns: Vec<Column>,
}

impl Header {
    pub fn new(names: Vec<String>) -> Result<Header, String> {
        let columns: Vec<Column> = names.iter().map(|n| classify(n)).collect();
        let mut seen = std::collections::HashSet::new();
        for n in &names {
            if !seen.insert(n.trim().to_lowercase()) {
                return Err(format!("the column '{n}' appears twice in the header"));
            }
        }
        Ok(Header { names, columns })
    }

    /// Checks the header has what the mode needs: `Username` and `Email` to create; one key
    /// column to update (see [`Header::update_key`]) plus the columns to change.
    pub fn require(&self, update: bool) -> Result<(), String> {
        if update {
            return self.update_key().map(|_| ()).ok_or_else(|| {
                format!(
                    "the header has no key column: an update file needs Username, Email or employeeIdentifier (found: {})",
                    self.names.join(", ")
                )
            });
        }
        for need in ["username", "email"] {
            if !self.columns.contains(&Column::Field(need)) {
                return Err(format!(
                    "the header has no {} column (found: {})",
                    if need == "username" { "Username" } else { "Email" },
                    self.names.join(", ")
                ));
            }
        }
        Ok(())
    }

    /// The column an update file matches users by: `Username` when present, else `Email`,
    /// else `employeeIdentifier` (the JSON field name, with its column's place).
    pub fn update_key(&self) -> Option<(&'static str, usize)> {
        ["username", "email", "employeeIdentifier"]
            .into_iter()
            .find_map(|k| self.columns.iter().position(|c| *c == Column::Field(k)).map(|i| (k, i)))
    }

    /// Columns that are neither fields nor (in `groups`, lowercase) group names.
    pub fn unknown(&self, groups: &HashMap<String, String>) -> Vec<String> {
        self.columns
            .iter()
            .filter_map(|c| match c {
                Column::Other(n) if !groups.contains_key(&n.to_lowercase()) => Some(n.clone()),
                _ => None,
            })
            .collect()
    }
}

/// One record, mapped and validated (or not).
#[derive(Debug, Clone)]
pub struct Record {
    /// Record number, the header being 1.
    pub row: usize,
    pub username: String,
    pub result: Result<Parsed, String>,
}

#[derive(Debug, Clone)]
pub struct Parsed {
    /// For creation: every given field; for update: only non-empty cells.
    pub input: UserInput,
    /// Group names (lowercase) the record asks to join.
    pub groups: Vec<String>,
    /// `manager` as given: a username or an id.
    pub manager: Option<String>,
}

fn truthy(s: &str) -> Option<bool> {
    match s.trim().to_lowercase().as_str() {
        "true" | "yes" | "y" | "1" | "x" => Some(true),
        "false" | "no" | "n" | "0" | "" => Some(false),
        _ => None,
    }
}

/// Maps one record's cells. Empty cells are absent. Errors name the column.
pub fn map_record(
    header: &Header,
    cells: &csv::StringRecord,
    groups: &HashMap<String, String>,
    creating: bool,
) -> Result<Parsed, String> {
    let mut body = Map::new();
    let mut phones: Vec<Value> = vec![];
    let mut addresses: Vec<(String, Map<String, Value>)> = vec![];
    let mut attrs: std::collections::BTreeMap<u32, (Option<String>, Option<String>)> = Default::default();
    let mut member_of = vec![];
    let mut manager = None;
    if cells.len() != header.columns.len() {
        return Err(format!(
            "the record has {} cells but the header has {} columns",
            cells.len(),
            header.columns.len()
        ));
    }
    for ((col, name), cell) in header.columns.iter().zip(&header.names).zip(cells) {
        let v = cell.trim();
        if v.is_empty() {
            continue;
        }
        match col {
            Column::Field(f) => {
                let value = match crate::fields::profile(f).map(|x| x.kind) {
                    Some(crate::fields::Kind::Bool) => match truthy(v) {
                        Some(b) => json!(b),
                        None => return Err(format!("column {name}: '{v}' is not true or false")),
                    },
                    Some(crate::fields::Kind::Int) => match v.parse::<i64>() {
                        Ok(n) => json!(n),
                        Err(_) => return Err(format!("column {name}: '{v}' is not a whole number")),
                    },
                    _ => json!(v),
                };
                body.insert(f.to_string(), value);
            }
            Column::Password => {
                body.insert("password".into(), json!(cell));
            }
            Column::State => {
                body.insert("state".into(), json!(v.to_uppercase()));
            }
            Column::Manager => manager = Some(v.to_string()),
            Column::Phone(t) => phones.push(json!({ "type": t, "number": v })),
            Column::Address(kind, prop) => match addresses.iter_mut().find(|(k, _)| k == kind) {
                Some((_, m)) => {
                    m.insert(prop.to_string(), json!(v));
                }
                None => {
                    let mut m = Map::new();
                    m.insert("type".into(), json!(kind));
                    m.insert(prop.to_string(), json!(v));
                    addresses.push((kind.to_string(), m));
                }
            },
            Column::AttributeName(n) => attrs.entry(*n).or_default().0 = Some(v.to_string()),
            Column::AttributeValue(n) => attrs.entry(*n).or_default().1 = Some(v.to_string()),
            Column::Other(n) => {
                if let Some(g) = groups.get(&n.to_lowercase()) {
                    match truthy(v) {
                        Some(true) => member_of.push(g.clone()),
                        Some(false) => {}
                        None => return Err(format!("column {name}: '{v}' is not true or false (group membership)")),
                    }
                }
            }
        }
    }
    if !phones.is_empty() {
        body.insert("phoneNumbers".into(), Value::Array(phones));
    }
    if !addresses.is_empty() {
        body.insert("addresses".into(), Value::Array(addresses.into_iter().map(|(_, m)| Value::Object(m)).collect()));
    }
    let mut attributes = vec![];
    for (n, (k, v)) in attrs {
        match (k, v) {
            (Some(k), v) => attributes.push(json!({ "name": k, "value": v.unwrap_or_default() })),
            (None, Some(_)) => {
                return Err(format!("column Attribute{n}_value: has a value but Attribute{n}_name is empty"))
            }
            (None, None) => {}
        }
    }
    if !attributes.is_empty() {
        body.insert("attributes".into(), Value::Array(attributes));
    }
    // Update mode never changes the username: it is the key.
    if !creating {
        body.remove("username");
    }
    let input = parse_user_object(body, creating).map_err(|e| describe(&e, header))?;
    Ok(Parsed { input, groups: member_of, manager })
}

/// Field errors as "column X: reason", using the file's own column names.
fn describe(e: &DomainError, header: &Header) -> String {
    match e {
        DomainError::Invalid(list) => list
            .iter()
            .map(|f| {
                let col = header
                    .columns
                    .iter()
                    .zip(&header.names)
                    .find(|(c, _)| match c {
                        Column::Field(n) => *n == f.field,
                        Column::Password => f.field == "password",
                        Column::State => f.field == "state",
                        _ => false,
                    })
                    .map(|(_, n)| n.clone())
                    .unwrap_or_else(|| f.field.clone());
                format!("column {col}: {}", f.message)
            })
            .collect::<Vec<_>>()
            .join("; "),
        other => other.to_string(),
    }
}

/// Refuses a file with a line longer than `MAX_RECORD_BYTES` before any work starts (every
/// front end: the API answers 400, the command line an error).
pub fn check_line_lengths(bytes: &[u8]) -> Result<(), String> {
    check_line_lengths_in(bytes)
}

/// [`check_line_lengths`] of a file read piece by piece (an upload waiting on disk).
pub fn check_line_lengths_in<R: std::io::Read>(mut input: R) -> Result<(), String> {
    let mut buf = vec![0u8; 64 * 1024];
    let (mut line, mut len) = (1usize, 0usize);
    loop {
        let n = match input.read(&mut buf) {
            Ok(0) => return Ok(()),
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(format!("the file cannot be read: {e}")),
        };
        for part in buf[..n].split_inclusive(|b| *b == b'\n') {
            let ends = part.last() == Some(&b'\n');
            len += part.len() - usize::from(ends);
            if len > MAX_RECORD_BYTES {
                return Err(format!("line {line} is longer than {MAX_RECORD_BYTES} bytes"));
            }
            if ends {
                line += 1;
                len = 0;
            }
        }
    }
}

/// A record: its number (the header being 1) and its cells, or why it cannot be read.
pub type RawRecord = (usize, Result<csv::StringRecord, String>);

/// The header, and the records one at a time: an import holds a batch of records in
/// memory, not the file's. A malformed file (no header, bad UTF-8 in the header) is an error
/// for the file; a bad record is an error for that record only.
pub fn records<R: std::io::Read>(input: R) -> Result<(Header, Records<R>), String> {
    let mut rdr = csv::ReaderBuilder::new().has_headers(false).flexible(true).from_reader(input);
    let mut first = csv::ByteRecord::new();
    match rdr.read_byte_record(&mut first) {
        Ok(true) => {}
        Ok(false) => return Err("the file is empty: it needs a header row with at least Username and Email".into()),
        Err(e) => return Err(format!("the header cannot be read: {e}")),
    }
    let mut cells = first.iter();
    let lead = cells.next().map(|c| c.strip_prefix(b"\xef\xbb\xbf").unwrap_or(c));
    let names: Result<Vec<String>, _> = lead.into_iter().chain(cells).map(|c| String::from_utf8(c.to_vec())).collect();
    let names = names.map_err(|_| "the header is not UTF-8 text".to_string())?;
    Ok((Header::new(names)?, Records { rdr, row: 1 }))
}

/// Records after the header (see [`records`]); blank lines are skipped.
pub struct Records<R> {
    rdr: csv::Reader<R>,
    row: usize,
}

impl<R: std::io::Read> Iterator for Records<R> {
    type Item = RawRecord;

    fn next(&mut self) -> Option<RawRecord> {
        loop {
            let mut r = csv::ByteRecord::new();
            self.row += 1;
            let row = self.row;
            match self.rdr.read_byte_record(&mut r) {
                Ok(false) => return None,
                Err(e) => return Some((row, Err(format!("the record cannot be read: {e}")))),
                Ok(true) => {}
            }
            if r.as_slice().len() > MAX_RECORD_BYTES {
                return Some((row, Err(format!("the record is longer than {MAX_RECORD_BYTES} bytes"))));
            }
            if r.iter().all(|c| c.iter().all(u8::is_ascii_whitespace)) {
                continue; // a blank line
            }
            // One buffer per record (not a String per cell).
            return Some((
                row,
                csv::StringRecord::from_byte_record(r).map_err(|_| "the record is not UTF-8 text".to_string()),
            ));
        }
    }
}

/// How many records follow the header (for progress), without keeping any.
pub fn count_records(bytes: &[u8]) -> usize {
    count_records_in(bytes)
}

/// [`count_records`] of a file read piece by piece.
pub fn count_records_in<R: std::io::Read>(input: R) -> usize {
    let mut rdr = csv::ReaderBuilder::new().has_headers(true).flexible(true).from_reader(input);
    let mut r = csv::ByteRecord::new();
    let mut n = 0;
    while let Ok(true) = rdr.read_byte_record(&mut r) {
        n += 1;
    }
    n
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read(bytes: &[u8]) -> Result<(Header, Vec<RawRecord>), String> {
        let (header, records) = records(bytes)?;
        Ok((header, records.collect()))
    }

    fn groups() -> HashMap<String, String> {
        HashMap::from([("engineering".to_string(), "Engineering".to_string())])
    }

    #[test]
    fn bom_crlf_and_multiline_quoted_fields() {
        let csv = "\u{feff}Username,Email,Description\r\nada,ada@x.io,\"line one\r\nline \"\"two\"\", with comma\"\r\nbob,bob@x.io,plain\r\n";
        let (h, recs) = read(csv.as_bytes()).unwrap();
        assert_eq!(h.names[0], "Username", "the BOM is not part of the first header");
        assert_eq!(recs.len(), 2);
        assert_eq!(recs[0].0, 2);
        assert_eq!(recs[1].0, 3, "a quoted field spanning lines is one record");
        let cells = recs[0].1.clone().unwrap();
        assert_eq!(&cells[2], "line one\r\nline \"two\", with comma");
    }

    #[test]
    fn columns_map_case_insensitively_with_groups_phones_addresses_attributes() {
        let names = [
            "USERNAME",
            "email",
            "FirstName",
            "Engineering",
            "mobile_number",
            "home_city",
            "home_country",
            "Attribute1_name",
            "Attribute1_value",
            "Shoe Size",
            "unix_uid",
            "manager",
            "State",
        ];
        let h = Header::new(names.iter().map(|s| s.to_string()).collect()).unwrap();
        assert_eq!(h.unknown(&groups()), vec!["Shoe Size"]);
        let cells: Vec<String> =
            ["Ada", "Ada@X.io", "Ada", "yes", "+1 555", "Paris", "FR", "badge", "7", "42", "1001", "grace", "staged"]
                .iter()
                .map(|s| s.to_string())
                .collect();
        let p = map_record(&h, &csv::StringRecord::from(cells), &groups(), true).unwrap();
        assert_eq!(p.input.username.as_deref(), Some("Ada"), "usernames keep their case");
        assert_eq!(p.groups, vec!["Engineering"]);
        assert_eq!(p.manager.as_deref(), Some("grace"));
        assert_eq!(p.input.state, Some(crate::State::Staged));
        assert_eq!(p.input.profile["phoneNumbers"], json!([{"type": "mobile", "number": "+1 555"}]));
        assert_eq!(p.input.profile["addresses"], json!([{"type": "home", "locality": "Paris", "country": "FR"}]));
        assert_eq!(p.input.profile["attributes"], json!([{"name": "badge", "value": "7"}]));
        assert_eq!(p.input.profile["unix_uid"], json!(1001));
    }

    #[test]
    fn bad_records_name_their_column() {
        let h = Header::new(vec!["Username".into(), "Email".into(), "unix_uid".into(), "Engineering".into()]).unwrap();
        let cell = |v: &[&str]| csv::StringRecord::from(v.to_vec());
        let err = map_record(&h, &cell(&["ada", "not-an-email", "", ""]), &groups(), true).unwrap_err();
        assert!(err.contains("column Email"), "{err}");
        let err = map_record(&h, &cell(&["ada", "a@x.io", "many", ""]), &groups(), true).unwrap_err();
        assert!(err.contains("column unix_uid"), "{err}");
        let err = map_record(&h, &cell(&["ada", "a@x.io", "", "maybe"]), &groups(), true).unwrap_err();
        assert!(err.contains("column Engineering"), "{err}");
        let err = map_record(&h, &cell(&["", "a@x.io", "", ""]), &groups(), true).unwrap_err();
        assert!(err.contains("column Username") && err.contains("required"), "{err}");
        assert!(map_record(&h, &cell(&["ada", "a@x.io", ""]), &groups(), true).is_err(), "short record");
    }

    #[test]
    fn overlong_lines_are_refused_with_their_number() {
        let mut f = b"Username,Email\nada,ada@x.io\n".to_vec();
        assert!(check_line_lengths(&f).is_ok());
        f.extend(vec![b'x'; MAX_RECORD_BYTES + 1]);
        assert_eq!(check_line_lengths(&f).unwrap_err(), format!("line 3 is longer than {MAX_RECORD_BYTES} bytes"));
        // Read in small pieces, a long line spans many of them.
        struct Trickle<'a>(&'a [u8]);
        impl std::io::Read for Trickle<'_> {
            fn read(&mut self, out: &mut [u8]) -> std::io::Result<usize> {
                let n = out.len().min(self.0.len()).min(7);
                out[..n].copy_from_slice(&self.0[..n]);
                self.0 = &self.0[n..];
                Ok(n)
            }
        }
        assert_eq!(
            check_line_lengths_in(Trickle(&f)).unwrap_err(),
            format!("line 3 is longer than {MAX_RECORD_BYTES} bytes")
        );
        let ok = [&b"a\n"[..], &vec![b'x'; MAX_RECORD_BYTES], b"\n", &vec![b'y'; MAX_RECORD_BYTES]].concat();
        assert!(check_line_lengths_in(Trickle(&ok)).is_ok());
    }

    #[test]
    fn headers_need_username_and_email_once() {
        let h = |n: &[&str]| Header::new(n.iter().map(|s| s.to_string()).collect()).unwrap();
        assert!(h(&["Username"]).require(false).unwrap_err().contains("Email"));
        assert!(Header::new(vec!["Username".into(), "Email".into(), "email".into()]).unwrap_err().contains("twice"));
        // An update file needs one key column and the columns to change.
        assert_eq!(h(&["Username", "department"]).update_key(), Some(("username", 0)));
        assert!(h(&["Username", "department"]).require(true).is_ok());
        assert_eq!(h(&["department", "Email"]).update_key(), Some(("email", 1)));
        assert_eq!(h(&["employeeIdentifier", "jobTitle"]).update_key(), Some(("employeeIdentifier", 0)));
        assert!(h(&["department"]).require(true).unwrap_err().contains("no key column"));
        assert!(read(b"").is_err());
    }
}
