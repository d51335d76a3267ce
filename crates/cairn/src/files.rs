//! The data directory and the database files: readable by Cairn's user only (issue 13). The
//! SQLite database holds password hashes and, without SMTP, live activation and reset links in
//! the outbox; `secret.key` seals TOTP secrets. The directory is created 0700 and the files
//! 0600; modes left more open by an earlier version or by hand are tightened at start, and each
//! tightening is reported.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};

/// Creates the data directory if needed and tightens the modes of it and of the database files;
/// returns one line per mode changed.
pub fn prepare(data_dir: &Path, database_url: &str) -> Result<Vec<String>> {
    let mut changed = vec![];
    create_dir(data_dir).with_context(|| format!("cannot create the data directory {}", data_dir.display()))?;
    tighten(data_dir, 0o700, &mut changed)?;
    let mut files = vec![data_dir.join("secret.key")];
    if let Some(db) = sqlite_path(database_url) {
        // SQLite gives the WAL and shared-memory files the database file's mode: a database
        // created here 0600 keeps all three private whatever the umask.
        create_private_file(&db).with_context(|| format!("cannot create the database file {}", db.display()))?;
        let name = db.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
        files.push(db.with_file_name(format!("{name}-wal")));
        files.push(db.with_file_name(format!("{name}-shm")));
        files.push(db.with_file_name(format!("{name}-journal")));
        files.push(db);
    }
    for f in files {
        tighten(&f, 0o600, &mut changed)?;
    }
    Ok(changed)
}

/// The file of a `sqlite://` URL (none for an in-memory database).
pub fn sqlite_path(url: &str) -> Option<PathBuf> {
    let rest = url.strip_prefix("sqlite://").or_else(|| url.strip_prefix("sqlite:"))?;
    let path = rest.split('?').next().unwrap_or("");
    (!path.is_empty() && path != ":memory:").then(|| PathBuf::from(path))
}

#[cfg(unix)]
fn create_dir(dir: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::DirBuilderExt;
    std::fs::DirBuilder::new().recursive(true).mode(0o700).create(dir)
}

#[cfg(not(unix))]
fn create_dir(dir: &Path) -> std::io::Result<()> {
    std::fs::create_dir_all(dir)
}

/// Creates `path` empty and private unless it exists (an empty file is an empty database).
fn create_private_file(path: &Path) -> std::io::Result<()> {
    if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
        if !parent.exists() {
            create_dir(parent)?;
        }
    }
    let mut o = std::fs::OpenOptions::new();
    o.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut o, 0o600);
    match o.open(path) {
        Ok(_) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(()),
        Err(e) => Err(e),
    }
}

/// Removes group and other permissions beyond `mode` from an existing `path`.
#[cfg(unix)]
fn tighten(path: &Path, mode: u32, changed: &mut Vec<String>) -> Result<()> {
    use std::os::unix::fs::PermissionsExt;
    let meta = match std::fs::metadata(path) {
        Ok(m) => m,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(e).with_context(|| format!("cannot read the mode of {}", path.display())),
    };
    let old = meta.permissions().mode() & 0o777;
    if old & !mode == 0 {
        return Ok(());
    }
    let new = old & mode;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(new))
        .with_context(|| format!("cannot restrict the mode of {} to {new:04o}", path.display()))?;
    changed.push(format!("{}: mode {old:04o} was more open than {mode:04o}, now {new:04o}", path.display()));
    Ok(())
}

#[cfg(not(unix))]
fn tighten(_: &Path, _: u32, _: &mut Vec<String>) -> Result<()> {
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sqlite_paths() {
        assert_eq!(sqlite_path("sqlite:///var/lib/cairn/cairn.db"), Some(PathBuf::from("/var/lib/cairn/cairn.db")));
        assert_eq!(sqlite_path("sqlite://data/cairn.db?mode=rwc"), Some(PathBuf::from("data/cairn.db")));
        assert_eq!(sqlite_path("sqlite::memory:"), None);
        assert_eq!(sqlite_path("postgres://db/cairn"), None);
    }
}
