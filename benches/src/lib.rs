//! What the benchmark binaries share: the release `cairn serve` they start, free ports, and
//! the raw Argon2id rate of this machine that sign-in figures are read against.

use std::path::Path;
use std::process::{Child, Command};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};

/// Argon2id verifications per second on every core at once, with Cairn's parameters
/// (19 MiB, t=2, p=1): what no sign-in path can beat.
pub fn raw_argon2_rate() -> Result<f64> {
    let salt = SaltString::encode_b64(b"benchmark-salt16")?;
    let hash = argon2::Argon2::new(
        argon2::Algorithm::Argon2id,
        argon2::Version::V0x13,
        argon2::Params::new(19 * 1024, 2, 1, None).map_err(|e| anyhow!("{e}"))?,
    )
    .hash_password(b"pw-u000001", &salt)
    .map_err(|e| anyhow!("{e}"))?
    .to_string();
    let cores = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(2);
    let t = Instant::now();
    let per = 40;
    let threads: Vec<_> = (0..cores)
        .map(|_| {
            let hash = hash.clone();
            std::thread::spawn(move || {
                let parsed = PasswordHash::new(&hash).expect("phc");
                for _ in 0..per {
                    argon2::Argon2::default().verify_password(b"pw-u000001", &parsed).expect("verifies");
                }
            })
        })
        .collect();
    for t in threads {
        t.join().map_err(|_| anyhow!("thread"))?;
    }
    Ok((cores * per) as f64 / t.elapsed().as_secs_f64())
}

pub fn free_port() -> Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

/// A `cairn serve` child, killed when dropped.
pub struct Server {
    pub child: Child,
    pub base: String,
}

impl Server {
    /// Starts the release `cairn serve` in `data` (SQLite there) with these settings and waits
    /// until it is ready; its output goes to `data/server.log`.
    pub fn start(cairn: &Path, data: &Path, http: u16, env: &[(&str, String)]) -> Result<Server> {
        std::fs::create_dir_all(data)?;
        let log = std::fs::File::create(data.join("server.log"))?;
        let mut c = Command::new(cairn);
        c.arg("serve")
            .current_dir(data)
            .env("CAIRN_DATA_DIR", data)
            .env("CAIRN_HTTP_ADDR", format!("127.0.0.1:{http}"))
            .env("CAIRN_LOG", "warn")
            .stdout(log.try_clone()?)
            .stderr(log);
        for (k, v) in env {
            c.env(k, v);
        }
        let mut server = Server { child: c.spawn()?, base: format!("http://127.0.0.1:{http}") };
        server.wait()?;
        Ok(server)
    }

    /// Waits for `/readyz`.
    pub fn wait(&mut self) -> Result<()> {
        let t = Instant::now();
        while t.elapsed() < Duration::from_secs(60) {
            if let Ok(r) = reqwest::blocking::get(format!("{}/readyz", self.base)) {
                if r.status().is_success() {
                    return Ok(());
                }
            }
            if let Some(s) = self.child.try_wait()? {
                bail!("cairn exited: {s}");
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        bail!("cairn did not become ready")
    }

    /// The server's resident memory and its peak so far, in MiB (`/proc/PID/status`).
    pub fn rss_mib(&self) -> Result<(f64, f64)> {
        rss_mib(self.child.id())
    }
}

/// A process's resident memory and its peak so far, in MiB (`/proc/PID/status`).
pub fn rss_mib(pid: u32) -> Result<(f64, f64)> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let kib = |key: &str| -> f64 {
        status
            .lines()
            .find(|l| l.starts_with(key))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|n| n.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    Ok((kib("VmRSS:") / 1024.0, kib("VmHWM:") / 1024.0))
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A `cairn serve` on the database at `url` (SQLite or PostgreSQL), HTTP only on a free port,
/// started without waiting on a blocking client (the list benchmarks run on tokio); stopped
/// with SIGTERM (SIGKILL after five seconds) when dropped.
pub struct DbServer {
    child: Option<Child>,
    pub base: String,
}

impl DbServer {
    /// Starts it with `api_key` as its bootstrap key and waits up to `ready_within` for
    /// `/readyz` (a server on a large database may first build what it needs).
    pub async fn start(
        bin: &Path,
        url: &str,
        data_dir: &Path,
        api_key: &str,
        ready_within: Duration,
    ) -> Result<DbServer> {
        Self::start_with(bin, url, data_dir, api_key, ready_within, &[]).await
    }

    /// As [`DbServer::start`], with these settings too (they win over LDAP and RADIUS off).
    pub async fn start_with(
        bin: &Path,
        url: &str,
        data_dir: &Path,
        api_key: &str,
        ready_within: Duration,
        env: &[(&str, &str)],
    ) -> Result<DbServer> {
        let port = free_port()?;
        let log = std::fs::File::create(data_dir.join("server.log"))?;
        let child = Command::new(bin)
            .arg("serve")
            .current_dir(data_dir)
            .env("CAIRN_DATABASE_URL", url)
            .env("CAIRN_DATA_DIR", data_dir)
            .env("CAIRN_HTTP_ADDR", format!("127.0.0.1:{port}"))
            .env("CAIRN_BOOTSTRAP_API_KEY", api_key)
            .env("CAIRN_LDAP_ADDR", "off")
            .env("CAIRN_RADIUS_ADDR", "off")
            .envs(env.iter().copied())
            .stdin(std::process::Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .with_context(|| format!("starting {}", bin.display()))?;
        let mut server = DbServer { child: Some(child), base: format!("http://127.0.0.1:{port}") };
        let client = reqwest::Client::builder().no_proxy().build()?;
        let deadline = Instant::now() + ready_within;
        loop {
            if let Some(status) = server.child.as_mut().and_then(|c| c.try_wait().ok().flatten()) {
                let log = std::fs::read_to_string(data_dir.join("server.log")).unwrap_or_default();
                bail!("the server exited ({status}) before it was ready:\n{log}");
            }
            if let Ok(r) = client.get(format!("{}/readyz", server.base)).send().await {
                if r.status() == reqwest::StatusCode::OK {
                    return Ok(server);
                }
            }
            if Instant::now() > deadline {
                bail!("the server was not ready within {} s", ready_within.as_secs());
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().map_or(0, Child::id)
    }

    /// SIGTERM for a graceful stop; SIGKILL when it takes longer than five seconds.
    pub fn stop(&mut self) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        if let Ok(Some(_)) = child.try_wait() {
            return;
        }
        let _ = Command::new("kill").arg("-TERM").arg(child.id().to_string()).status();
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = child.kill();
        let _ = child.wait();
    }
}

impl Drop for DbServer {
    fn drop(&mut self) {
        self.stop();
    }
}

/// The three load averages of `/proc/loadavg`.
pub fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_default()
}

/// Signs `client` (with a cookie store) in to the admin portal: the login page's CSRF token,
/// then the form.
pub async fn admin_login(client: &reqwest::Client, base: &str, email: &str, password: &str) -> Result<()> {
    let page = client.get(format!("{base}/admin/login")).header("connection", "close").send().await?.text().await?;
    let csrf = page
        .split("name=\"csrf\" value=\"")
        .nth(1)
        .and_then(|s| s.split('"').next())
        .ok_or_else(|| anyhow!("no csrf on the login page"))?
        .to_string();
    let r = client
        .post(format!("{base}/admin/login"))
        .header("connection", "close")
        .form(&[("email", email), ("password", password), ("csrf", &csrf)])
        .send()
        .await?;
    anyhow::ensure!(r.status().is_redirection(), "admin login failed: {}", r.status());
    Ok(())
}
