//! The `cairn` command (§1.1).

mod backup;
mod config;
mod files;
mod http_server;

use std::io::{BufRead, IsTerminal, Write};
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::{anyhow, Context, Result};
use cairn_directory::{Clock, Ctx, Directory, SystemClock};
use cairn_domain::{Role, Secret};
use cairn_store::Store;
use clap::{Parser, Subcommand};

use config::Config;

// Imports and bulk jobs allocate and free many small values; mimalloc does that several times
// faster than the system allocator and returns memory promptly.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// `mi_option_purge_delay` in mimalloc 3's option list (libmimalloc-sys builds version 3 unless
/// told otherwise; a test checks the index against the option's default).
const MI_OPTION_PURGE_DELAY: libmimalloc_sys::mi_option_t = 15;

/// How long freed memory is kept before it goes back to the system (ms; arenas keep it ten
/// times as long). mimalloc's default of 1 s (10 s for arenas) kept the peak of a 100,000-user
/// directory sync at 161-179 MiB and a re-sync after it at 183-198 MiB; at 100 ms they were
/// 151 and 163 MiB, for 3 % more time. `MIMALLOC_PURGE_DELAY` set by the admin still wins.
const PURGE_DELAY_MS: std::ffi::c_long = 100;

fn tune_allocator() {
    if std::env::var_os("MIMALLOC_PURGE_DELAY").is_none() {
        // SAFETY: sets a plain integer option; mimalloc reads it atomically.
        unsafe { libmimalloc_sys::mi_option_set(MI_OPTION_PURGE_DELAY, PURGE_DELAY_MS) }
    }
}

#[derive(Parser)]
#[command(name = "cairn", version, about = "Cairn: the self-hosted directory with a lifecycle")]
struct Cli {
    /// Configuration file (default: ./cairn.toml when present). CAIRN_* variables win.
    #[arg(long, global = true, value_name = "FILE")]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the HTTP API (and every enabled listener and worker).
    Serve,
    /// Bring the database schema up to date and exit.
    Migrate,
    /// Manage API keys.
    Apikey {
        #[command(subcommand)]
        command: ApikeyCommand,
    },
    /// Manage portal administrators.
    Admin {
        #[command(subcommand)]
        command: AdminCommand,
    },
    /// Import or export users.
    Users {
        #[command(subcommand)]
        command: UsersCommand,
    },
    /// Write a consistent backup of the directory to FILE while it keeps serving: the
    /// database, secret.key (unless --without-key) and the LDAP certificate, as one archive.
    Backup {
        file: PathBuf,
        /// Leave secret.key out (keep it apart; a restore then needs --key).
        #[arg(long)]
        without_key: bool,
        /// Replace FILE if it exists.
        #[arg(long)]
        force: bool,
    },
    /// Restore a backup into an empty data directory and an empty database (refuses others).
    Restore {
        file: PathBuf,
        /// The secret.key kept apart from a backup made --without-key.
        #[arg(long, value_name = "FILE")]
        key: Option<PathBuf>,
    },
}

#[derive(Subcommand)]
enum UsersCommand {
    /// Import users from a CSV file (JumpCloud template columns), with a progress bar.
    Import {
        file: PathBuf,
        /// Validate every record and report what would happen; change nothing.
        #[arg(long)]
        dry_run: bool,
        /// Update existing users matched by Username; never create.
        #[arg(long)]
        update: bool,
    },
    /// Export users to standard output.
    Export {
        /// csv or json
        #[arg(long, default_value = "csv")]
        format: String,
        /// field:$op:value, repeatable (all must hold)
        #[arg(long)]
        filter: Vec<String>,
        /// prefix search over names, username, e-mail, department
        #[arg(long)]
        search: Option<String>,
        /// space-separated fields, '-' for descending
        #[arg(long)]
        sort: Option<String>,
        /// space-separated fields to export
        #[arg(long)]
        fields: Option<String>,
    },
}

#[derive(Subcommand)]
enum ApikeyCommand {
    /// Create an API key and print it once.
    Create {
        #[arg(long)]
        name: String,
        /// admin or read-only
        #[arg(long, default_value = "admin")]
        role: String,
    },
}

#[derive(Subcommand)]
enum AdminCommand {
    /// Create a portal administrator; prompts for a password on a terminal, else generates one.
    Create {
        #[arg(long)]
        email: String,
        #[arg(long)]
        password: Option<String>,
        /// admin or read-only
        #[arg(long, default_value = "admin")]
        role: String,
        /// Require an authenticator (TOTP): enrolled at the first sign-in, asked at every one.
        #[arg(long)]
        require_mfa: bool,
    },
    /// Clear an administrator's lockout (too many failed sign-ins), e.g. the last one's.
    Unlock {
        #[arg(long)]
        email: String,
    },
}

fn main() {
    tune_allocator();
    // A user never sees a Rust panic or backtrace: one line, and a non-zero status.
    std::panic::set_hook(Box::new(|info| {
        let msg = info
            .payload()
            .downcast_ref::<&str>()
            .map(|s| s.to_string())
            .or_else(|| info.payload().downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "unknown".into());
        eprintln!("error: internal error ({msg}); please report it");
    }));
    let cli = Cli::parse();
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build().expect("tokio runtime");
    if let Err(e) = rt.block_on(run(cli)) {
        eprintln!("error: {}", one_line(&e));
        std::process::exit(1);
    }
    // Every command has closed its database by now: the process ends without taking the
    // runtime down thread by thread (after a large import each thread would give its memory
    // back page by page; the OS takes it all at once).
    let _ = std::io::stdout().flush();
    std::process::exit(0);
}

fn one_line(e: &anyhow::Error) -> String {
    e.chain().map(|c| c.to_string()).collect::<Vec<_>>().join(": ")
}

fn init_logging(cfg: &Config) -> Result<()> {
    let filter =
        tracing_subscriber::EnvFilter::try_new(&cfg.log).map_err(|e| anyhow!("CAIRN_LOG '{}': {e}", cfg.log))?;
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr);
    if cfg.log_format == "json" {
        builder.json().init();
    } else {
        builder.init();
    }
    Ok(())
}

async fn open(cfg: &Config) -> Result<Directory> {
    for line in files::prepare(&cfg.data_dir, &cfg.database_url)? {
        if tracing::dispatcher::has_been_set() {
            tracing::warn!("tightened a file mode: {line}");
        } else {
            eprintln!("note: tightened a file mode: {line}");
        }
    }
    let smtp = cfg.smtp_url.as_deref().map(cairn_directory::Smtp::parse).transpose().map_err(|e| anyhow!(e))?;
    let secret_key = Some(secret_key(&cfg.data_dir)?);
    let store = Store::connect(&cfg.database_url)
        .await
        .with_context(|| format!("cannot open the database {}", redact(&cfg.database_url)))?;
    let config = cairn_directory::Config {
        base_url: cfg.base_url.clone(),
        smtp,
        mail_from: cfg.mail_from.clone(),
        secret_key,
        spool_dir: Some(cfg.data_dir.clone()),
        max_concurrent_imports: cfg.max_concurrent_imports,
        outbox_retention: (cfg.outbox_retention_days > 0)
            .then(|| chrono::Duration::days(cfg.outbox_retention_days.min(36_500) as i64)),
        oidc_access_ttl: chrono::Duration::seconds(cfg.oidc_access_token_seconds.min(86_400) as i64),
        stale_job_after: chrono::Duration::seconds(cfg.stale_job_seconds.min(86_400) as i64),
        ..Default::default()
    };
    let dir = Directory::with_config(store, clock(), config);
    dir.migrate().await.context("cannot migrate the database")?;
    Ok(dir)
}

/// The key for secrets at rest, `secret.key` in the data directory, created on first start.
/// Several processes sharing one PostgreSQL database must share this file too.
fn secret_key(data_dir: &std::path::Path) -> Result<[u8; 32]> {
    let path = data_dir.join("secret.key");
    if !path.exists() {
        let mut k = [0u8; 32];
        rand::RngCore::fill_bytes(&mut rand::rngs::OsRng, &mut k);
        let mut f = std::fs::OpenOptions::new();
        f.write(true).create_new(true);
        #[cfg(unix)]
        std::os::unix::fs::OpenOptionsExt::mode(&mut f, 0o600);
        match f.open(&path) {
            Ok(mut file) => {
                file.write_all(hex_encode(&k).as_bytes()).with_context(|| format!("cannot write {}", path.display()))?
            }
            // Another process created it first: read theirs.
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
            Err(e) => return Err(e).with_context(|| format!("cannot create {}", path.display())),
        }
    }
    let text = std::fs::read_to_string(&path).with_context(|| format!("cannot read {}", path.display()))?;
    let bytes: Vec<u8> = (0..text.trim().len())
        .step_by(2)
        .map(|i| u8::from_str_radix(text.trim().get(i..i + 2).unwrap_or("zz"), 16))
        .collect::<std::result::Result<_, _>>()
        .map_err(|_| anyhow!("{} is not a 64-character hex key", path.display()))?;
    bytes.try_into().map_err(|_| anyhow!("{} is not a 64-character hex key", path.display()))
}

fn hex_encode(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// Hides a password in a database URL before printing it.
fn redact(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(s), Some(at)) if at > s => match url[s + 3..at].find(':') {
            Some(c) => format!("{}***{}", &url[..s + 3 + c + 1], &url[at..]),
            None => url.to_string(),
        },
        _ => url.to_string(),
    }
}

/// The system clock, or — for end-to-end tests only — the system clock shifted by the number of
/// seconds written in the file named by `CAIRN_TEST_CLOCK_FILE`, re-read at every reading, so
/// a test moves time (schedules, lockout, token expiry) instead of sleeping.
fn clock() -> Arc<dyn Clock> {
    match std::env::var_os("CAIRN_TEST_CLOCK_FILE") {
        Some(path) => Arc::new(FileClock(PathBuf::from(path))),
        None => Arc::new(SystemClock),
    }
}

struct FileClock(PathBuf);

impl Clock for FileClock {
    fn now(&self) -> chrono::DateTime<chrono::Utc> {
        let offset = std::fs::read_to_string(&self.0).ok().and_then(|s| s.trim().parse::<i64>().ok()).unwrap_or(0);
        chrono::Utc::now() + chrono::Duration::seconds(offset)
    }
}

fn parse_role(s: &str) -> Result<Role> {
    Role::parse(s).ok_or_else(|| anyhow!("--role must be admin or read-only, not '{s}'"))
}

async fn run(cli: Cli) -> Result<()> {
    let cfg = Config::load(cli.config.as_deref())?;
    match cli.command {
        Command::Serve => {
            init_logging(&cfg)?;
            serve(cfg).await
        }
        Command::Migrate => {
            open(&cfg).await?.close().await;
            println!("database is up to date");
            Ok(())
        }
        Command::Apikey { command: ApikeyCommand::Create { name, role } } => {
            let role = parse_role(&role)?;
            let dir = open(&cfg).await?;
            let k = dir.create_apikey(&Ctx::cli(), &name, role).await.map_err(|e| anyhow!("{e}"))?;
            dir.close().await;
            println!("{}", k.secret.expose());
            eprintln!("API key '{}' ({}) created; it is shown only this once.", k.key.name, role.as_str());
            Ok(())
        }
        Command::Backup { file, without_key, force } => backup::backup(&cfg, &file, without_key, force).await,
        Command::Restore { file, key } => backup::restore(&cfg, &file, key.as_deref()).await,
        Command::Users { command: UsersCommand::Import { file, dry_run, update } } => {
            import(cfg, &file, dry_run, update).await
        }
        Command::Users { command: UsersCommand::Export { format, filter, search, sort, fields } } => {
            let format = cairn_directory::ExportFormat::parse(&format)
                .ok_or_else(|| anyhow!("--format must be csv or json, not '{format}'"))?;
            let mut pairs: Vec<(String, String)> = filter.into_iter().map(|f| ("filter".to_string(), f)).collect();
            pairs.extend(search.map(|s| ("search".to_string(), s)));
            pairs.extend(sort.map(|s| ("sort".to_string(), s)));
            pairs.extend(fields.map(|s| ("fields".to_string(), s)));
            let q = cairn_domain::query::ListQuery::from_pairs(&pairs).map_err(|e| anyhow!("{e}"))?;
            let dir = open(&cfg).await?;
            let org = dir.organization().await.map_err(|e| anyhow!("{e}"))?.id;
            let mut ex = cairn_directory::Exporter::new(format, q.fields.clone(), org);
            let mut rx = dir.export_users(q);
            let stdout = std::io::stdout();
            let mut out = std::io::BufWriter::new(stdout.lock());
            out.write_all(ex.header().as_bytes())?;
            let mut n = 0;
            while let Some(u) = rx.recv().await {
                out.write_all(ex.row(&u.map_err(|e| anyhow!("{e}"))?).as_bytes())?;
                n += 1;
            }
            out.write_all(ex.footer().as_bytes())?;
            out.flush()?;
            dir.close().await;
            eprintln!("exported {n} users");
            Ok(())
        }
        Command::Admin { command: AdminCommand::Create { email, password, role, require_mfa } } => {
            let role = parse_role(&role)?;
            let password = match password {
                Some(p) => Some(Secret::new(p)),
                None if std::io::stdin().is_terminal() => prompt_password()?,
                None => None,
            };
            let dir = open(&cfg).await?;
            let (admin, generated) =
                dir.create_admin(&Ctx::cli(), &email, password, role).await.map_err(|e| anyhow!("{e}"))?;
            if require_mfa {
                dir.set_admin_mfa_required(&Ctx::cli(), &admin.id, true).await.map_err(|e| anyhow!("{e}"))?;
            }
            dir.close().await;
            println!(
                "administrator {} created ({}{})",
                admin.email,
                role.as_str(),
                if require_mfa { ", MFA required" } else { "" }
            );
            if let Some(pw) = generated {
                println!("password: {}", pw.expose());
            }
            Ok(())
        }
        Command::Admin { command: AdminCommand::Unlock { email } } => {
            let dir = open(&cfg).await?;
            let was = dir.unlock_admin(&Ctx::cli(), &email).await.map_err(|e| anyhow!("{e}"));
            dir.close().await;
            println!("administrator {email} {}", if was? { "unlocked" } else { "was not locked" });
            Ok(())
        }
    }
}

async fn import(cfg: Config, file: &std::path::Path, dry_run: bool, update: bool) -> Result<()> {
    // Read as the import goes, never whole into memory.
    let input = std::fs::File::open(file).with_context(|| format!("cannot read {}", file.display()))?;
    let dir = open(&cfg).await?;
    let ctx = Ctx { source: "csv".into(), ..Ctx::cli() };
    let opts = cairn_directory::ImportOptions { dry_run, update };
    let job = dir
        .create_job(
            &ctx,
            "csv_import",
            serde_json::json!({ "dry_run": dry_run, "update": update, "file": file.display().to_string() }),
        )
        .await
        .map_err(|e| anyhow!("{e}"))?;
    let bar = indicatif::ProgressBar::new(0);
    bar.set_style(
        indicatif::ProgressStyle::with_template(
            "{spinner} [{elapsed_precise}] {bar:40} {pos}/{len} records ({per_sec}, {eta} left)",
        )
        .expect("progress template")
        .progress_chars("=> "),
    );
    let b = bar.clone();
    let progress = move |done: usize, total: usize| {
        b.set_length(total as u64);
        b.set_position(done as u64);
    };
    let counts = dir.run_csv_import(&ctx, &job, input, opts, &progress).await.map_err(|e| anyhow!("{e}"))?;
    bar.finish_and_clear();
    // Finding the errors reads all of the job's results: only when there are some.
    let errors = match counts.error {
        0 => vec![],
        _ => dir.job_results(&job, Some("error"), 50, 0).await.map_err(|e| anyhow!("{e}"))?.1,
    };
    let info = dir.job(&job).await.map_err(|e| anyhow!("{e}"))?;
    println!("{} {} (job {job})", if dry_run { "Dry run of" } else { "Imported" }, file.display());
    println!("  created  {:>8}", counts.created);
    println!("  updated  {:>8}", counts.updated);
    println!("  exists   {:>8}", counts.exists);
    println!("  error    {:>8}", counts.error);
    if let Some(m) = info.message {
        println!("note: {m}");
    }
    if !errors.is_empty() {
        println!("\n  row  username              problem");
        for r in &errors {
            println!(
                "  {:>4}  {:<20}  {}",
                r.seq,
                r.username.clone().unwrap_or_default(),
                r.message.clone().unwrap_or_default()
            );
        }
        if counts.error as usize > errors.len() {
            println!("  … {} more: GET /api/v2/users/import/{job}?outcome=error", counts.error as usize - errors.len());
        }
    }
    // Closed before exiting, so that the last connection checkpoints and removes the WAL.
    dir.close().await;
    if counts.error > 0 {
        std::process::exit(2);
    }
    Ok(())
}

fn prompt_password() -> Result<Option<Secret>> {
    eprint!("Password (leave empty to generate one): ");
    std::io::stderr().flush().ok();
    let mut line = String::new();
    std::io::stdin().lock().read_line(&mut line)?;
    let pw = line.trim_end_matches(['\r', '\n']).to_string();
    Ok((!pw.is_empty()).then(|| Secret::new(pw)))
}

async fn serve(cfg: Config) -> Result<()> {
    let dir = open(&cfg).await?;
    match dir.interrupt_stale_jobs().await {
        Ok(0) => {}
        Ok(n) => tracing::warn!(jobs = n, "marked jobs left unfinished by a stopped server as interrupted"),
        Err(e) => return Err(anyhow!("cannot check unfinished jobs: {e}")),
    }
    // A directory sync converges when run again, so one the stop cut short goes on by itself.
    if let Err(e) = dir.resume_interrupted_directory_syncs().await {
        tracing::warn!(error = %e, "cannot resume interrupted directory syncs");
    }
    let boot = dir
        .bootstrap(cfg.bootstrap_api_key.as_deref())
        .await
        .map_err(|e| anyhow!("first-start bootstrap failed: {e}"))?;
    let metrics = metrics_exporter_prometheus::PrometheusBuilder::new()
        .install_recorder()
        .map_err(|e| anyhow!("cannot start metrics: {e}"))?;
    let listener = tokio::net::TcpListener::bind(&cfg.http_addr)
        .await
        .with_context(|| format!("cannot listen on CAIRN_HTTP_ADDR {}", cfg.http_addr))?;
    let addr = listener.local_addr()?;
    if let (Some(email), Some(pw), Some(key)) = (&boot.admin_email, &boot.admin_password, &boot.api_key) {
        println!("First start: created the administrator and an API key. They are shown only this once.");
        println!("  portal:   {}/admin", cfg.base_url);
        println!("  admin:    {email}");
        println!("  password: {}", pw.expose());
        println!("  API key:  {}", key.expose());
    }
    println!("Cairn is listening on http://{addr} (API at {}/api)", cfg.base_url);
    tracing::info!(%addr, database = %redact(&cfg.database_url), "serving");
    // The scheduler runs in every process; claiming makes each schedule fire once.
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let mut ldap_listing = None;
    if cfg.ldap_addr.is_some() || cfg.ldaps_addr.is_some() {
        let ldap = cairn_ldap::LdapConfig {
            addr: cfg.ldap_addr.clone(),
            ldaps_addr: cfg.ldaps_addr.clone(),
            base_dn: cfg.ldap_base_dn.clone(),
            tls_cert: cfg.ldap_tls_cert.clone(),
            tls_key: cfg.ldap_tls_key.clone(),
            limits: cairn_ldap::Limits::default(),
        };
        let r = cairn_ldap::start(dir.clone(), ldap, &cfg.data_dir, stop_rx.clone()).await?;
        if let Some(a) = r.ldap {
            println!("LDAP on ldap://{a} (StartTLS), base DN {}", cfg.ldap_base_dn);
        }
        if let Some(a) = r.ldaps {
            println!("LDAPS on ldaps://{a}");
        }
        match &r.generated_cert {
            Some(p) => println!("LDAP TLS certificate {} (self-signed), SHA-256 {}", p.display(), r.fingerprint),
            None => println!("LDAP TLS certificate SHA-256 {}", r.fingerprint),
        }
        ldap_listing = Some(cairn_http::LdapListing {
            ldap_url: r.ldap.map(|a| format!("ldap://{a}")),
            ldaps_url: r.ldaps.map(|a| format!("ldaps://{a}")),
            base_dn: cfg.ldap_base_dn.clone(),
            fingerprint: r.fingerprint.clone(),
        });
    }
    let mut radius_addr = None;
    if let Some(a) = &cfg.radius_addr {
        let limits = cairn_radius::Limits { max_pending: cfg.radius_max_pending, ..Default::default() };
        let cfg = cairn_radius::RadiusConfig { addr: a.clone(), limits };
        let bound = cairn_radius::start(dir.clone(), cfg, stop_rx.clone()).await?;
        println!("RADIUS on udp://{bound} (PAP, Message-Authenticator required)");
        radius_addr = Some(bound.to_string());
    }
    let scheduler = {
        let dir = dir.clone();
        let stop = stop_rx.clone();
        tokio::spawn(async move { dir.run_scheduler(stop).await })
    };
    let mailer = {
        let dir = dir.clone();
        tokio::spawn(async move { dir.run_mailer(stop_rx).await })
    };
    let app = cairn_http::router_with(
        cairn_http::AppState { dir: dir.clone(), metrics: Some(metrics), ldap: ldap_listing, radius_addr },
        cairn_oidc::routes(dir.clone()),
    );
    let limits = http_server::Limits {
        header_timeout: cfg.http_header_timeout,
        idle_timeout: cfg.http_idle_timeout,
        max_connections: cfg.http_max_connections,
    };
    let served = http_server::serve(listener, app, limits, shutdown()).await.context("HTTP server failed");
    let _ = stop_tx.send(true);
    let _ = scheduler.await;
    let _ = mailer.await;
    served?;
    dir.close().await;
    tracing::info!("stopped");
    Ok(())
}

async fn shutdown() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        if let Ok(mut s) = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            s.recv().await;
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! { _ = ctrl_c => {}, _ = term => {} }
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_allocator_option_tuned_is_the_purge_delay() {
        if std::env::var_os("MIMALLOC_PURGE_DELAY").is_some() {
            return;
        }
        // mimalloc 3's purge delay defaults to 1000 ms: were the index another option's (a
        // version whose list moved), this would not hold.
        // SAFETY: reads and sets plain integer options.
        unsafe {
            assert_eq!(libmimalloc_sys::mi_option_get(super::MI_OPTION_PURGE_DELAY), 1000);
            super::tune_allocator();
            assert_eq!(libmimalloc_sys::mi_option_get(super::MI_OPTION_PURGE_DELAY), super::PURGE_DELAY_MS);
        }
    }
}
