//! Headless Chromium through chromedriver (Debian's `chromium` and `chromium-driver`), for
//! the tests that drive the portals as a person would.

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use fantoccini::{Client, ClientBuilder, Locator};
use serde_json::json;

use super::free_port;

pub struct Driver {
    child: Child,
    pub port: u16,
}

impl Drop for Driver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub fn chromedriver() -> Option<Driver> {
    let found = Command::new("chromedriver").arg("--version").output().map(|o| o.status.success()).unwrap_or(false);
    if !found {
        cairn_store::testing::skip(
            "browser tests",
            "chromedriver is not installed (apt-get install chromium chromium-driver)",
        );
        return None;
    }
    let port = free_port();
    let child = Command::new("chromedriver")
        .arg(format!("--port={port}"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start chromedriver");
    let http = reqwest::blocking::Client::new();
    let start = Instant::now();
    while http.get(format!("http://127.0.0.1:{port}/status")).send().is_err() {
        assert!(start.elapsed() < Duration::from_secs(20), "chromedriver did not start");
        std::thread::sleep(Duration::from_millis(100));
    }
    Some(Driver { child, port })
}

pub fn chromium_binary() -> Option<&'static str> {
    ["/usr/bin/chromium", "/usr/bin/chromium-browser", "/usr/bin/google-chrome"]
        .into_iter()
        .find(|p| Path::new(p).exists())
}

pub async fn browser(port: u16, profile: &Path, downloads: &Path) -> Client {
    let mut chrome = json!({
        "args": [
            "--headless=new",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--no-first-run",
            "--disable-dev-shm-usage",
            "--window-size=1280,1000",
            format!("--user-data-dir={}", profile.display()),
        ],
        "prefs": {
            "download.default_directory": downloads.display().to_string(),
            "download.prompt_for_download": false,
        },
    });
    if let Some(b) = chromium_binary() {
        chrome["binary"] = json!(b);
    }
    let mut caps = serde_json::Map::new();
    caps.insert("browserName".into(), json!("chrome"));
    caps.insert("goog:chromeOptions".into(), chrome);
    ClientBuilder::new(hyper_util::client::legacy::connect::HttpConnector::new())
        .capabilities(caps)
        .connect(&format!("http://127.0.0.1:{port}"))
        .await
        .expect("connect to chromedriver")
}

pub async fn css(c: &Client, sel: &str) -> fantoccini::elements::Element {
    match c.wait().at_most(Duration::from_secs(15)).for_element(Locator::Css(sel)).await {
        Ok(e) => e,
        Err(e) => {
            let url = c.current_url().await.map(|u| u.to_string()).unwrap_or_default();
            let body = c.source().await.unwrap_or_default();
            panic!("no element {sel} at {url}: {e}\n{body}");
        }
    }
}

/// Waits until the page says `needle`.
pub async fn wait_text(c: &Client, needle: &str) {
    let start = Instant::now();
    loop {
        let t = match c.find(Locator::Css("body")).await {
            Ok(b) => b.text().await.unwrap_or_default(),
            Err(_) => String::new(),
        };
        if t.contains(needle) {
            return;
        }
        assert!(start.elapsed() < Duration::from_secs(15), "the page never said {needle:?}:\n{t}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
