//! `cairn backup FILE` and `cairn restore FILE` (§1.1). A backup is one archive (tar, zstd):
//! a manifest, a consistent copy of the database — SQLite's `VACUUM INTO` snapshot, taken while
//! the server keeps serving, or PostgreSQL's `pg_dump` custom format, one snapshot too — the
//! data directory's `secret.key` unless `--without-key`, and the LDAP TLS pair (so clients that
//! pinned its fingerprint keep trusting it). Without the key nothing sealed with it (TOTP
//! secrets, …) can be opened again, so the archive is written `0600` and a restore refuses to
//! start without a key.

use std::fs::File;
use std::io::{BufWriter, Read, Write};
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{anyhow, bail, Context, Result};
use cairn_store::{Backend, Store};
use serde::{Deserialize, Serialize};

use crate::config::Config;

const FORMAT: &str = "cairn-backup";
const VERSION: u32 = 1;
const MANIFEST: &str = "manifest.json";
const SQLITE_DB: &str = "cairn.db";
const PG_DUMP: &str = "cairn.pgdump";
const KEY: &str = "secret.key";
/// Data-directory files carried as they are.
const DATA_FILES: &[&str] = &["ldap-cert.pem", "ldap-key.pem"];

#[derive(Serialize, Deserialize)]
struct Manifest {
    format: String,
    version: u32,
    /// `sqlite` or `postgres`: a backup goes back into the same kind of database.
    backend: String,
    created: String,
    cairn: String,
    /// The newest migration applied to the copied database.
    schema: i64,
    with_key: bool,
}

fn backend_name(b: Backend) -> &'static str {
    match b {
        Backend::Sqlite => "sqlite",
        Backend::Postgres => "postgres",
    }
}

/// Files removed when dropped unless kept: nothing half-written outlives a failed command.
#[derive(Default)]
struct Scratch(Vec<PathBuf>);

impl Scratch {
    fn add(&mut self, p: PathBuf) -> PathBuf {
        self.0.push(p.clone());
        p
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        for p in &self.0 {
            let _ = std::fs::remove_file(p);
        }
    }
}

/// `path` with `suffix` appended to its file name.
fn beside(path: &Path, suffix: &str) -> PathBuf {
    let mut name = path.file_name().map(|n| n.to_os_string()).unwrap_or_default();
    name.push(suffix);
    path.with_file_name(name)
}

fn private_file(path: &Path) -> Result<File> {
    let mut o = std::fs::OpenOptions::new();
    o.write(true).create(true).truncate(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut o, 0o600);
    o.open(path).with_context(|| format!("cannot create {}", path.display()))
}

fn mib(bytes: u64) -> String {
    format!("{:.1} MiB", bytes as f64 / (1024.0 * 1024.0))
}

fn bar(len: u64, what: &str) -> indicatif::ProgressBar {
    let b = indicatif::ProgressBar::new(len);
    b.set_style(
        indicatif::ProgressStyle::with_template(&format!(
            "{{spinner}} {what} [{{elapsed_precise}}] {{bar:40}} {{bytes}}/{{total_bytes}} ({{bytes_per_sec}})"
        ))
        .expect("progress template")
        .progress_chars("=> "),
    );
    b
}

async fn run_tool(cmd: &str, args: &[String]) -> Result<()> {
    let out = tokio::process::Command::new(cmd).args(args).output().await.map_err(|e| {
        if e.kind() == std::io::ErrorKind::NotFound {
            anyhow!("{cmd} was not found: install PostgreSQL's client tools (postgresql-client), of the server's version or newer")
        } else {
            anyhow!("cannot run {cmd}: {e}")
        }
    })?;
    if !out.status.success() {
        let err = String::from_utf8_lossy(&out.stderr);
        bail!("{cmd} failed: {}", err.trim());
    }
    Ok(())
}

pub async fn backup(cfg: &Config, file: &Path, without_key: bool, force: bool) -> Result<()> {
    if file.exists() && !force {
        bail!("{} already exists: choose another name, or add --force to replace it", file.display());
    }
    let started = Instant::now();
    let key_path = cfg.data_dir.join(KEY);
    if !without_key && !key_path.exists() {
        bail!("{} is missing: without it sealed secrets cannot be restored", key_path.display());
    }
    let store = Store::connect(&cfg.database_url)
        .await
        .with_context(|| format!("cannot open the database {}", crate::redact(&cfg.database_url)))?;
    if store.tables().await?.is_empty() {
        store.close().await;
        bail!("the database {} is empty: there is nothing to back up", crate::redact(&cfg.database_url));
    }
    let (schema, known) = store.schema_versions().await?;
    if schema > known {
        store.close().await;
        bail!("the database was last migrated by a newer Cairn (schema {schema}, this one knows {known}): back it up with that version");
    }
    let mut scratch = Scratch::default();
    let partial = scratch.add(beside(file, ".partial"));
    let snapshot = scratch.add(beside(file, ".snapshot"));
    let _ = std::fs::remove_file(&snapshot);
    eprintln!("copying the {} database…", backend_name(store.backend()));
    let db_entry = match store.backend() {
        Backend::Sqlite => {
            store.snapshot_into(&snapshot).await.context("cannot copy the database")?;
            SQLITE_DB
        }
        Backend::Postgres => {
            run_tool(
                "pg_dump",
                &[
                    "--format=custom".into(),
                    "--no-owner".into(),
                    "--no-privileges".into(),
                    format!("--file={}", snapshot.display()),
                    format!("--dbname={}", store.url()),
                ],
            )
            .await?;
            PG_DUMP
        }
    };
    let manifest = Manifest {
        format: FORMAT.into(),
        version: VERSION,
        backend: backend_name(store.backend()).into(),
        created: chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
        cairn: env!("CARGO_PKG_VERSION").into(),
        schema,
        with_key: !without_key,
    };
    store.close().await;
    let data_dir = cfg.data_dir.clone();
    let (snap, out) = (snapshot.clone(), partial.clone());
    let db_size = std::fs::metadata(&snapshot)?.len();
    let written = tokio::task::spawn_blocking(move || -> Result<u64> {
        let f = private_file(&out)?;
        let mut z = zstd::Encoder::new(BufWriter::with_capacity(1 << 20, f), 3)?;
        {
            let mut t = tar::Builder::new(&mut z);
            let mut add = |name: &str, len: u64, r: &mut dyn Read| -> Result<()> {
                let mut h = tar::Header::new_gnu();
                h.set_size(len);
                h.set_mode(0o600);
                h.set_mtime(chrono::Utc::now().timestamp().max(0) as u64);
                h.set_cksum();
                t.append_data(&mut h, name, r).with_context(|| format!("cannot write {name} into the backup"))
            };
            let m = serde_json::to_vec_pretty(&manifest)?;
            add(MANIFEST, m.len() as u64, &mut m.as_slice())?;
            let b = bar(db_size, "archiving");
            add(db_entry, db_size, &mut b.wrap_read(File::open(&snap)?))?;
            b.finish_and_clear();
            let mut extra: Vec<&str> = DATA_FILES.to_vec();
            if !without_key {
                extra.insert(0, KEY);
            }
            for name in extra {
                let p = data_dir.join(name);
                if let Ok(f) = File::open(&p) {
                    let len = f.metadata()?.len();
                    add(name, len, &mut f.take(len))?;
                }
            }
            t.finish()?;
        }
        let f = z.finish()?.into_inner().map_err(|e| e.into_error())?;
        f.sync_all()?;
        Ok(f.metadata()?.len())
    })
    .await??;
    std::fs::rename(&partial, file).with_context(|| format!("cannot write {}", file.display()))?;
    println!(
        "backup written to {} ({}, database {}) in {:.1} s",
        file.display(),
        mib(written),
        mib(db_size),
        started.elapsed().as_secs_f64()
    );
    if without_key {
        println!("it does not hold secret.key: keep {} apart; `cairn restore --key FILE` needs it", key_path.display());
    } else {
        println!("it holds secret.key: keep the file as private as the data directory");
    }
    Ok(())
}

/// Refuses a restore that would overwrite anything: the data directory must hold no key and
/// the database no table.
async fn check_empty(cfg: &Config, backend: Backend) -> Result<()> {
    let key = cfg.data_dir.join(KEY);
    if key.exists() {
        bail!(
            "{} exists: a restore goes into an empty data directory (move this one away, or set CAIRN_DATA_DIR)",
            key.display()
        );
    }
    let store = Store::connect(&cfg.database_url)
        .await
        .with_context(|| format!("cannot open the database {}", crate::redact(&cfg.database_url)))?;
    if store.backend() != backend {
        store.close().await;
        bail!(
            "the backup is of a {} directory and CAIRN_DATABASE_URL is {}: restore into the same kind of database",
            backend_name(backend),
            backend_name(store.backend())
        );
    }
    let tables = store.tables().await?;
    store.close().await;
    if !tables.is_empty() {
        bail!(
            "the database {} is not empty ({} tables, e.g. {}): a restore goes into an empty database",
            crate::redact(&cfg.database_url),
            tables.len(),
            tables[0]
        );
    }
    Ok(())
}

fn read_key(path: &Path) -> Result<Vec<u8>> {
    let text = std::fs::read_to_string(path).with_context(|| format!("cannot read the key {}", path.display()))?;
    let t = text.trim();
    if t.len() != 64 || !t.bytes().all(|b| b.is_ascii_hexdigit()) {
        bail!("{} is not a secret.key (64 hexadecimal characters)", path.display());
    }
    Ok(t.as_bytes().to_vec())
}

pub async fn restore(cfg: &Config, file: &Path, key: Option<&Path>) -> Result<()> {
    let started = Instant::now();
    let size = std::fs::metadata(file).with_context(|| format!("cannot read {}", file.display()))?.len();
    let given_key = key.map(read_key).transpose()?;
    let mut archive = {
        let f = File::open(file).with_context(|| format!("cannot read {}", file.display()))?;
        tar::Archive::new(zstd::Decoder::new(f).with_context(|| format!("{} is not a Cairn backup", file.display()))?)
    };
    let not_backup = || anyhow!("{} is not a Cairn backup (made by `cairn backup`)", file.display());
    let mut entries = archive.entries().map_err(|_| not_backup())?;
    let manifest: Manifest = {
        let mut e = entries.next().ok_or_else(not_backup)?.map_err(|_| not_backup())?;
        if e.path().ok().as_deref() != Some(Path::new(MANIFEST)) || e.size() > 64 * 1024 {
            return Err(not_backup());
        }
        let mut text = String::new();
        e.read_to_string(&mut text).map_err(|_| not_backup())?;
        serde_json::from_str(&text).map_err(|_| not_backup())?
    };
    if manifest.format != FORMAT {
        return Err(not_backup());
    }
    if manifest.version > VERSION {
        bail!("the backup was made by a newer Cairn ({}, archive version {})", manifest.cairn, manifest.version);
    }
    let backend = match manifest.backend.as_str() {
        "sqlite" => Backend::Sqlite,
        "postgres" => Backend::Postgres,
        other => bail!("the backup is of an unknown kind of database '{other}'"),
    };
    if !manifest.with_key && given_key.is_none() {
        bail!("the backup was made --without-key: give the secret.key kept apart with --key FILE");
    }
    // The data directory (0700) and, on SQLite, the database file's place.
    crate::files::prepare(&cfg.data_dir, &cfg.database_url)?;
    check_empty(cfg, backend).await?;
    let db_file = crate::files::sqlite_path(&cfg.database_url);

    // Every part goes to a temporary name first; nothing takes its place until all arrived.
    let mut scratch = Scratch::default();
    let mut parts: Vec<(PathBuf, PathBuf)> = vec![];
    let mut db_part = None;
    eprintln!(
        "restoring a {} backup of {} (Cairn {}, {})…",
        manifest.backend,
        manifest.created,
        manifest.cairn,
        mib(size)
    );
    for e in entries {
        let mut e = e.with_context(|| format!("{} is damaged", file.display()))?;
        let name = e.path()?.to_string_lossy().into_owned();
        let target = match name.as_str() {
            SQLITE_DB if backend == Backend::Sqlite => {
                db_file.clone().ok_or_else(|| anyhow!("CAIRN_DATABASE_URL names no SQLite file"))?
            }
            PG_DUMP if backend == Backend::Postgres => cfg.data_dir.join(PG_DUMP),
            KEY if given_key.is_none() => cfg.data_dir.join(KEY),
            KEY => continue,
            n if DATA_FILES.contains(&n) => cfg.data_dir.join(n),
            // Only the names Cairn writes: an entry can never choose where it lands.
            other => bail!("{} holds an unexpected entry '{other}': not restored", file.display()),
        };
        let tmp = scratch.add(beside(&target, ".restoring"));
        let b = bar(e.size(), "extracting");
        let mut out = BufWriter::new(private_file(&tmp)?);
        std::io::copy(&mut b.wrap_read(&mut e), &mut out).with_context(|| format!("{} is damaged", file.display()))?;
        out.into_inner().map_err(|e| e.into_error())?.sync_all()?;
        b.finish_and_clear();
        if matches!(name.as_str(), SQLITE_DB | PG_DUMP) {
            db_part = Some(tmp.clone());
        }
        parts.push((tmp, target));
    }
    let db_part = db_part.ok_or_else(|| anyhow!("{} holds no database", file.display()))?;
    if let Some(k) = &given_key {
        let tmp = scratch.add(cfg.data_dir.join("secret.key.restoring"));
        private_file(&tmp)?.write_all(k)?;
        parts.push((tmp, cfg.data_dir.join(KEY)));
    }
    if backend == Backend::Postgres {
        // One transaction: a failure leaves the database as empty as it was.
        run_tool(
            "pg_restore",
            &[
                "--no-owner".into(),
                "--no-privileges".into(),
                "--exit-on-error".into(),
                "--single-transaction".into(),
                format!("--dbname={}", cfg.database_url),
                db_part.display().to_string(),
            ],
        )
        .await?;
        parts.retain(|(tmp, _)| *tmp != db_part);
    } else if let Some(db) = &db_file {
        // The empty database's companions must not be replayed into the restored one.
        for suffix in ["-wal", "-shm", "-journal"] {
            let _ = std::fs::remove_file(beside(db, suffix));
        }
    }
    for (tmp, target) in &parts {
        std::fs::rename(tmp, target).with_context(|| format!("cannot write {}", target.display()))?;
    }
    drop(scratch);

    // Opened as `serve` would: migrated to this version, then checked.
    let dir = crate::open(cfg).await?;
    let key_ok = dir.check_secret_key().await.map_err(|e| anyhow!("{e}"))?;
    let g = dir.gauges().await.map_err(|e| anyhow!("{e}"))?;
    dir.close().await;
    println!(
        "restored in {:.1} s: {} users ({} active, {} staged, {} suspended)",
        started.elapsed().as_secs_f64(),
        g.staged + g.activated + g.suspended,
        g.activated,
        g.staged,
        g.suspended
    );
    if key_ok == Some(false) {
        bail!("the key does not open the secrets sealed in this backup: TOTP sign-ins will fail until the right secret.key is in {}", cfg.data_dir.display());
    }
    Ok(())
}
