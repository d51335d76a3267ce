//! What the benchmark binaries share: the release `cairn serve` they start, free ports, and
//! the raw Argon2id rate of this machine that sign-in figures are read against.

use std::path::Path;
use std::process::{Child, Command};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Result};
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
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id()))?;
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
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
