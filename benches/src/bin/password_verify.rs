//! Issue 4 benchmark: password verifications per second per core through `cairn-directory`
//! (`authenticate`: the one sign-in path every protocol uses, with its lockout bookkeeping and
//! audit event) against raw `argon2` verification with the same parameters, side by side.
//!
//! Then, when `CAIRN_TEST_DATABASE_URL` names a PostgreSQL server: 1,000 wrong passwords for
//! one user at 50 concurrent through `authenticate` on a fresh database there: the failure
//! count must come out exact (every failure counted once under the row lock) and the latency
//! percentiles are reported.
//!
//! cargo run --release -p cairn-bench --bin password_verify

use std::sync::Arc;
use std::time::Instant;

use argon2::password_hash::{PasswordHash, PasswordVerifier};
use cairn_directory::{AuthRequest, Credential, Ctx, Directory, SystemClock};
use cairn_domain::access::Protocol;
use cairn_domain::{Actor, CreationSource, Secret};
use cairn_store::Store;
use serde_json::json;

const ROUNDS: usize = 9;
const PER_ROUND: usize = 20;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cores = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(2);
    let tmp = tempfile::tempdir()?;
    let d = Directory::new(
        Store::connect(&format!("sqlite://{}/cairn.db", tmp.path().display())).await?,
        Arc::new(SystemClock),
    );
    d.migrate().await?;
    let ctx = Ctx::new(Actor::system(), "bench", Some("127.0.0.1".into()));
    let pw = "lantern orchard seventeen";
    let user = d
        .create_user(
            &ctx,
            &json!({"username": "bench", "email": "bench@example.com", "password": pw}),
            CreationSource::ManualEntry,
            "bench",
        )
        .await
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    let hash = user.password_hash.clone().expect("hashed").expose().to_string();

    // Rounds that alternate raw and directory batches, so that other load on the machine
    // falls on both alike; the median of the per-round ratios is reported.
    let mut raw_rates = vec![];
    let mut pool_rates = vec![];
    let mut cairn_rates = vec![];
    let mut ratios = vec![];
    for _ in 0..ROUNDS {
        // Raw: the same PHC string verified on every core at once.
        let t = Instant::now();
        let threads: Vec<_> = (0..cores)
            .map(|_| {
                let hash = hash.clone();
                std::thread::spawn(move || {
                    let parsed = PasswordHash::new(&hash).expect("phc");
                    for _ in 0..PER_ROUND {
                        cairn_directory::argon2_params().verify_password(pw.as_bytes(), &parsed).expect("verifies");
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().expect("thread");
        }
        let raw = (cores * PER_ROUND) as f64 / t.elapsed().as_secs_f64() / cores as f64;

        // The bounded blocking pool alone (no database).
        let t = Instant::now();
        let tasks: Vec<_> = (0..cores)
            .map(|_| {
                let (d, hash) = (d.clone(), Secret::new(hash.clone()));
                tokio::spawn(async move {
                    for _ in 0..PER_ROUND {
                        assert!(d.hasher().verify(&Secret::new(pw), &hash).await.expect("verify"));
                    }
                })
            })
            .collect();
        for t in tasks {
            t.await?;
        }
        let pool = (cores * PER_ROUND) as f64 / t.elapsed().as_secs_f64() / cores as f64;

        // Through the directory, as many concurrent logins as cores.
        let t = Instant::now();
        let tasks: Vec<_> = (0..cores)
            .map(|_| {
                let (d, ctx) = (d.clone(), ctx.clone());
                tokio::spawn(async move {
                    for _ in 0..PER_ROUND {
                        let password = Secret::new(pw);
                        let req = AuthRequest {
                            protocol: Protocol::Portal,
                            credential: Credential::Password { login: "bench", password: &password, code: None },
                            resource: None,
                            client_addr: None,
                            device: None,
                        };
                        d.authenticate(&ctx, req).await.expect("login");
                    }
                })
            })
            .collect();
        for t in tasks {
            t.await?;
        }
        let cairn = (cores * PER_ROUND) as f64 / t.elapsed().as_secs_f64() / cores as f64;
        raw_rates.push(raw);
        pool_rates.push(pool);
        cairn_rates.push(cairn);
        ratios.push(raw / cairn);
    }
    let median = |v: &mut Vec<f64>| {
        v.sort_by(|a, b| a.partial_cmp(b).unwrap());
        v[v.len() / 2]
    };
    println!(
        "cores: {cores}; {ROUNDS} rounds of {PER_ROUND} verifications per core each; medians per core: raw argon2 {:.1}/s, \
         hashing pool only {:.1}/s, cairn-directory authenticate {:.1}/s; overhead (median of per-round ratios) {:.1} %",
        median(&mut raw_rates),
        median(&mut pool_rates),
        median(&mut cairn_rates),
        (median(&mut ratios) - 1.0) * 100.0
    );
    d.close().await;
    if let Some(url) = cairn_store::testing::fresh_postgres_url("password_verify bench").await {
        concurrent_failures(&url).await?;
    }
    Ok(())
}

/// 1,000 wrong passwords at 50 concurrent for one user on PostgreSQL.
async fn concurrent_failures(url: &str) -> anyhow::Result<()> {
    const ATTEMPTS: usize = 1000;
    const CONCURRENT: usize = 50;
    let d = Directory::new(Store::connect(url).await?, Arc::new(SystemClock));
    d.migrate().await?;
    let ctx = Ctx::new(Actor::system(), "bench", None);
    d.update_settings(&ctx, &json!({"passwordPolicy": {"maxLoginAttempts": 1_000_000}}))
        .await
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    let user = d
        .create_user(
            &ctx,
            &json!({"username": "target", "email": "target@example.com", "password": "lantern orchard seventeen"}),
            CreationSource::ManualEntry,
            "bench",
        )
        .await
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    let next = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let t = Instant::now();
    let tasks: Vec<_> = (0..CONCURRENT)
        .map(|_| {
            let (d, ctx, next) = (d.clone(), ctx.clone(), next.clone());
            tokio::spawn(async move {
                let mut lat = vec![];
                while next.fetch_add(1, std::sync::atomic::Ordering::Relaxed) < ATTEMPTS {
                    let password = Secret::new("not the password");
                    let req = AuthRequest {
                        protocol: Protocol::Ldap,
                        credential: Credential::Password { login: "target", password: &password, code: None },
                        resource: None,
                        client_addr: None,
                        device: None,
                    };
                    let s = Instant::now();
                    assert!(d.authenticate(&ctx, req).await.is_err());
                    lat.push(s.elapsed().as_secs_f64() * 1000.0);
                }
                lat
            })
        })
        .collect();
    let mut lat = vec![];
    for task in tasks {
        lat.extend(task.await?);
    }
    let wall = t.elapsed().as_secs_f64();
    lat.sort_by(|a, b| a.partial_cmp(b).unwrap());
    let pct = |p: f64| lat[((lat.len() as f64 * p) as usize).min(lat.len() - 1)];
    let counted = d.get_user(&user.id).await.map_err(|e| anyhow::anyhow!("{e}"))?.bad_login_attempts;
    println!(
        "PostgreSQL: {ATTEMPTS} wrong passwords at {CONCURRENT} concurrent in {wall:.1} s ({:.0}/s); counted {counted} \
         ({}); latency p50 {:.0} ms, p99 {:.0} ms, max {:.0} ms",
        ATTEMPTS as f64 / wall,
        if counted == ATTEMPTS as i64 { "exact" } else { "WRONG" },
        pct(0.50),
        pct(0.99),
        lat[lat.len() - 1]
    );
    anyhow::ensure!(counted == ATTEMPTS as i64, "{counted} failures counted of {ATTEMPTS}");
    d.close().await;
    Ok(())
}
