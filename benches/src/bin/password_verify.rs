//! Issue 4 benchmark: password verifications per second per core through `cairn-directory`
//! (`authenticate`: the one sign-in path every protocol uses, with its lockout bookkeeping and
//! audit event) against raw `argon2` verification with the same parameters, side by side.
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
    Ok(())
}
