//! The admin portal (§7) end to end: the real binary, driven in headless Chromium through
//! chromedriver (Debian's `chromium` and `chromium-driver`), plus HTTP-level checks of
//! sessions, CSRF and read-only administrators that need no browser.

mod common;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use common::chrome::{browser, chromedriver, css, wait_text};
use common::{Browser, Db, Server};
use fantoccini::{Client, Locator};
use serde_json::{json, Value};

const ADMIN: &str = "admin@example.com";
const ADMIN_PW: &str = "correct horse battery staple";

fn create_admin(s: &Server, email: &str, role: &str) {
    let out = s
        .command()
        .args(["admin", "create", "--email", email, "--password", ADMIN_PW, "--role", role])
        .output()
        .expect("run cairn admin create");
    assert!(out.status.success(), "admin create failed: {}", String::from_utf8_lossy(&out.stderr));
}

/// 30 staged users: even numbers in Engineering, odd ones in Sales.
fn seed(s: &Server) -> Vec<Value> {
    (0..30)
        .map(|i| {
            let dept = if i % 2 == 0 { "Engineering" } else { "Sales" };
            let (st, u) = s.post(
                "/api/systemusers",
                json!({
                    "username": format!("user{i:02}"),
                    "email": format!("user{i:02}@example.com"),
                    "firstname": format!("First{i:02}"),
                    "lastname": "Tester",
                    "department": dept,
                    "state": "STAGED",
                }),
            );
            assert_eq!(st, 200, "{u}");
            u
        })
        .collect()
}

fn user_by_name(s: &Server, name: &str) -> Value {
    let (st, v) = s.get(&format!("/api/systemusers?filter=username:$eq:{name}"));
    assert_eq!(st, 200);
    v["results"][0].clone()
}

// ---- without a browser ----------------------------------------------------------------------

fn admin_login(b: &mut Browser, email: &str) -> (String, common::Page) {
    b.get("/admin/login");
    let p = b.post("/admin/login", &[("email", email), ("password", ADMIN_PW)]);
    b.follow(p)
}

#[test]
fn admin_sessions_csrf_and_read_only_admins() {
    for db in Db::all("admin portal sessions on PostgreSQL") {
        sessions_csrf_and_read_only(&db);
    }
}

fn sessions_csrf_and_read_only(db: &Db) {
    let s = Server::start(db);
    create_admin(&s, ADMIN, "admin");
    create_admin(&s, "viewer@example.com", "read-only");
    let users = seed(&s);
    let id = users[0]["_id"].as_str().unwrap().to_string();

    // Not signed in: every page leads to the login page.
    let mut anon = Browser::new(&s.base);
    let p = anon.get("/admin/users");
    assert_eq!(p.status, 303, "{}", p.body);
    assert_eq!(p.location.as_deref(), Some("/admin/login"));

    // A wrong password is refused with one message.
    anon.get("/admin/login");
    let p = anon.post("/admin/login", &[("email", ADMIN), ("password", "wrong password!")]);
    assert_eq!(p.status, 401);
    assert!(p.body.contains("incorrect"));

    // A read-only admin sees the users and cannot change them.
    let mut ro = Browser::new(&s.base);
    let (at, page) = admin_login(&mut ro, "viewer@example.com");
    assert_eq!(at, "/admin/users");
    assert!(page.body.contains("user00") && page.body.contains("read-only"), "{}", page.body);
    assert!(!page.body.contains("Activate Users"), "read-only admins get no Actions menu");
    let p = ro.post("/admin/users/actions/run", &[("action", "suspend"), ("user_id", &id)]);
    assert_eq!(p.status, 403);
    let p = ro.post(&format!("/admin/users/{id}"), &[("username", "renamed"), ("email", "user00@example.com")]);
    assert_eq!(p.status, 403);
    assert_eq!(user_by_name(&s, "user00")["state"], "STAGED");
    let p = ro.get(&format!("/admin/users/{id}"));
    assert_eq!(p.status, 200);
    assert!(p.body.contains("Current State"));
    // The group filter and Edit Columns (a personal preference, allowed read-only too).
    let (_, g) = s.post("/api/v2/usergroups", json!({"name": "Ops"}));
    let gid = g["id"].as_str().unwrap();
    s.post(&format!("/api/v2/usergroups/{gid}/members"), json!({"op": "add", "type": "user", "id": users[3]["_id"]}));
    let p = ro.get(&format!("/admin/users?group={gid}"));
    assert!(p.body.contains("user03") && !p.body.contains("user04"), "{}", p.body);
    ro.get("/admin/users/columns");
    let p = ro.post("/admin/users/columns", &[("show", "email"), ("show", "username"), ("pos_email", "1")]);
    assert_eq!(p.status, 303);
    let p = ro.get("/admin/users");
    let head = &p.body[p.body.find("<thead>").unwrap()..p.body.find("</thead>").unwrap()];
    assert!(head.find("Email").unwrap() < head.find("Username").unwrap(), "{head}");
    assert!(!head.contains("First name"), "{head}");

    // A full admin acts; a form without the CSRF token is refused.
    let mut b = Browser::new(&s.base);
    admin_login(&mut b, ADMIN);
    let raw = reqwest::blocking::Client::builder().redirect(reqwest::redirect::Policy::none()).build().unwrap();
    let r = raw
        .post(format!("{}/admin/users/actions/run", s.base))
        .form(&[("action", "activate"), ("user_id", id.as_str())])
        .send()
        .unwrap();
    assert!(r.status() == 403 || r.status() == 303, "no CSRF token, no session: {}", r.status());
    let p = b.post("/admin/users/actions/run", &[("action", "activate"), ("user_id", &id), ("mail", "no")]);
    assert_eq!(p.status, 200, "{}", p.body);
    assert!(p.body.contains("1 done"), "{}", p.body);
    assert_eq!(user_by_name(&s, "user00")["state"], "ACTIVATED");

    // The change is recorded as the admin, from the portal.
    let (_, ev) = s.get(&format!("/api/v2/events?user_id={id}"));
    let text = ev.to_string();
    assert!(text.contains(ADMIN) && text.contains("\"manual\""), "{text}");

    // Signing out ends the session.
    let p = b.post("/admin/logout", &[]);
    assert_eq!(p.location.as_deref(), Some("/admin/login?m=signed-out"));
    assert_eq!(b.get("/admin/users").status, 303);
}

// ---- in a browser -----------------------------------------------------------------------------

async fn body_text(c: &Client) -> String {
    css(c, "body").await.text().await.unwrap()
}

async fn fill(c: &Client, sel: &str, value: &str) {
    let e = css(c, sel).await;
    e.clear().await.unwrap();
    e.send_keys(value).await.unwrap();
}

/// Clicks a button by its visible words.
async fn button(c: &Client, words: &str) {
    let xpath = format!("//button[normalize-space()='{words}'] | //a[normalize-space()='{words}']");
    let e = c.wait().at_most(Duration::from_secs(15)).for_element(Locator::XPath(&xpath)).await.unwrap_or_else(|e| {
        panic!("no button '{words}': {e}");
    });
    e.click().await.unwrap();
}

async fn open_menu(c: &Client, summary_words: &str) {
    let xpath = format!("//summary[normalize-space()='{summary_words}']");
    c.find(Locator::XPath(&xpath))
        .await
        .unwrap_or_else(|e| panic!("no menu {summary_words}: {e}"))
        .click()
        .await
        .unwrap();
}

async fn path_is(c: &Client, prefix: &str) {
    let start = Instant::now();
    loop {
        let url = c.current_url().await.unwrap();
        if url.path() == prefix {
            return;
        }
        assert!(start.elapsed() < Duration::from_secs(15), "expected {prefix}, at {url}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Waits until the address has `needle` in its query.
async fn query_has(c: &Client, needle: &str) {
    let start = Instant::now();
    while !c.current_url().await.unwrap().query().unwrap_or("").contains(needle) {
        assert!(start.elapsed() < Duration::from_secs(15), "the address never had {needle}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn screenshot(c: &Client, to: &Path) {
    let png = c.screenshot().await.unwrap();
    std::fs::create_dir_all(to.parent().unwrap()).unwrap();
    std::fs::write(to, png).unwrap();
}

async fn rows(c: &Client, table: &str) -> Vec<String> {
    css(c, table).await;
    let mut out = vec![];
    for r in c.find_all(Locator::Css(&format!("{table} tbody tr"))).await.unwrap() {
        out.push(r.text().await.unwrap());
    }
    out
}

fn shots_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("admin_portal")
}

#[test]
fn admin_runs_onboarding_and_offboarding_in_a_browser() {
    let Some(driver) = chromedriver() else { return };
    let s = Server::start(&Db::Sqlite);
    create_admin(&s, ADMIN, "admin");
    seed(&s);
    let (st, g) = s.post("/api/v2/usergroups", json!({"name": "Engineering"}));
    assert_eq!(st, 201, "{g}");
    let tmp = tempfile::tempdir().unwrap();
    let downloads = tmp.path().join("downloads");
    std::fs::create_dir_all(&downloads).unwrap();
    let base = s.base.clone();
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build().unwrap();
    let c = rt.block_on(browser(driver.port, &tmp.path().join("profile"), &downloads));

    // Log in; search; filter; edit columns; select rows and run an action.
    rt.block_on(async {
        c.goto(&format!("{base}/admin/users")).await.unwrap();
        path_is(&c, "/admin/login").await;
        fill(&c, "#email", ADMIN).await;
        fill(&c, "#password", ADMIN_PW).await;
        button(&c, "Sign in").await;
        path_is(&c, "/admin/users").await;
        wait_text(&c, "user29").await;
        // The page's script runs under the Content-Security-Policy (served from /static).
        css(&c, "#select-all").await.click().await.unwrap();
        wait_text(&c, " selected").await;
        css(&c, "#select-all").await.click().await.unwrap();
        wait_text(&c, "Select users with the checkboxes").await;

        fill(&c, "#search", "user1").await;
        button(&c, "Apply").await;
        query_has(&c, "search=user1").await;
        let r = rows(&c, "#users-table").await;
        assert_eq!(r.len(), 10, "search user1: {r:?}");
        assert!(r.iter().all(|t| t.contains("user1")), "{r:?}");

        c.goto(&format!("{base}/admin/users")).await.unwrap();
        css(&c, "#f-state").await.select_by_value("STAGED").await.unwrap();
        fill(&c, "#f-department", "Sales").await;
        button(&c, "Apply").await;
        query_has(&c, "department=Sales").await;
        let r = rows(&c, "#users-table").await;
        assert_eq!(r.len(), 15, "Sales: {r:?}");

        // Edit Columns: show the department first, remembered for this admin.
        button(&c, "Edit Columns").await;
        path_is(&c, "/admin/users/columns").await;
        css(&c, "#show-department").await.click().await.unwrap();
        fill(&c, "input[name=pos_department]", "0").await;
        button(&c, "Save columns").await;
        wait_text(&c, "Your columns were saved.").await;
        let first_header = css(&c, "#users-table thead th:nth-child(2)").await.text().await.unwrap();
        assert!(first_header.contains("Department"), "{first_header}");

        // Select two users and activate them without mail.
        css(&c, "input[aria-label='user01']").await.click().await.unwrap();
        css(&c, "input[aria-label='user03']").await.click().await.unwrap();
        open_menu(&c, "Actions").await;
        button(&c, "Activate Users").await;
        css(&c, "input[name=mail][value=no]").await.click().await.unwrap();
        button(&c, "Yes, Continue").await;
        css(&c, "#results").await;
        let r = rows(&c, "#results").await;
        assert_eq!(r.len(), 2, "{r:?}");
        assert!(r.iter().all(|t| t.contains("done")), "{r:?}");

        // A destructive action asks first; No, Cancel changes nothing.
        c.goto(&format!("{base}/admin/users?search=user05")).await.unwrap();
        css(&c, "input[aria-label='user05']").await.click().await.unwrap();
        open_menu(&c, "Actions").await;
        button(&c, "Delete Users").await;
        wait_text(&c, "Deleting is permanent").await;
        button(&c, "No, Cancel").await;
        path_is(&c, "/admin/users").await;

        c.goto(&format!("{base}/admin/users")).await.unwrap();
        css(&c, "#users-table").await;
        screenshot(&c, &shots_dir().join("users.png")).await;
    });
    assert_eq!(user_by_name(&s, "user01")["state"], "ACTIVATED");
    assert_eq!(user_by_name(&s, "user03")["state"], "ACTIVATED");
    assert_eq!(user_by_name(&s, "user05")["state"], "STAGED");

    // Schedule an activation from the details page's Change menu.
    let u02 = user_by_name(&s, "user02");
    let tomorrow = (chrono::Utc::now() + chrono::Duration::days(1)).format("%Y-%m-%d").to_string();
    rt.block_on(async {
        let id02 = u02["_id"].as_str().unwrap();
        c.goto(&format!("{base}/admin/users/{id02}")).await.unwrap();
        assert!(body_text(&c).await.contains("Current State"));
        open_menu(&c, "Change").await;
        button(&c, "Schedule Activation").await;
        // The click navigates: wait for the schedule form before filling it.
        css(&c, "#date").await;
        css(&c, "#time").await;
        c.execute(
            "document.getElementById('date').value = arguments[0]; document.getElementById('time').value = '09:30';",
            vec![json!(tomorrow)],
        )
        .await
        .unwrap();
        css(&c, "#time_zone").await.select_by_value("Europe/Paris").await.unwrap();
        button(&c, "Yes, Continue").await;
        let r = rows(&c, "#results").await;
        assert!(r[0].contains("done"), "{r:?}");
        button(&c, "Back").await;
        path_is(&c, &format!("/admin/users/{id02}")).await;
        let sched = rows(&c, "#schedules").await;
        assert!(sched[0].contains("ACTIVATED"), "{sched:?}");
        screenshot(&c, &shots_dir().join("user-details.png")).await;
    });
    let (_, v) = s.get(&format!("/api/systemusers/{}", u02["_id"].as_str().unwrap()));
    assert_eq!(v["scheduledStateChanges"].as_array().unwrap().len(), 1, "{v}");

    // Settings › Users through the confirmation; then Add user picks the new default.
    rt.block_on(async {
        c.goto(&format!("{base}/admin/settings")).await.unwrap();
        css(&c, "#s-manual").await.select_by_value("STAGED").await.unwrap();
        button(&c, "Save").await;
        let changes = rows(&c, "#setting-changes").await;
        assert_eq!(changes.len(), 1, "{changes:?}");
        assert!(changes[0].contains("ACTIVATED") && changes[0].contains("STAGED"));
        button(&c, "Yes, Continue").await;
        wait_text(&c, "The settings were saved.").await;

        c.goto(&format!("{base}/admin/users/new")).await.unwrap();
        let state = css(&c, "#n-state").await.prop("value").await.unwrap();
        assert_eq!(state.as_deref(), Some("STAGED"));
        fill(&c, "#n-username", "newbie").await;
        fill(&c, "#n-email", "newbie@example.com").await;
        fill(&c, "#n-firstname", "New").await;
        fill(&c, "#n-department", "Support").await;
        button(&c, "Add user").await;
        wait_text(&c, "The user was created.").await;
        assert_eq!(css(&c, "#user-state").await.text().await.unwrap(), "STAGED");
    });
    let (_, org) = s.get("/api/organizations");
    assert!(org.to_string().contains("\"manualEntry\":\"STAGED\""), "{org}");
    assert_eq!(user_by_name(&s, "newbie")["department"], "Support");

    // Import a CSV with errors: preview, then import, and see every row's outcome.
    let csv = tmp.path().join("people.csv");
    std::fs::write(
        &csv,
        "Username,Email,FirstName,department\r\nimp1,imp1@example.com,Imp,Import\r\nimp2,not-an-email,Bad,Import\r\n\
         imp1,imp1b@example.com,Dup,Import\r\nimp3,imp3@example.com,Three,Import\r\n",
    )
    .unwrap();
    rt.block_on(async {
        c.goto(&format!("{base}/admin/import")).await.unwrap();
        css(&c, "#file").await.send_keys(csv.to_str().unwrap()).await.unwrap();
        button(&c, "Upload").await;
        let r = rows(&c, "#import-results").await;
        assert_eq!(r.len(), 4, "{r:?}");
        assert!(body_text(&c).await.contains("nothing was changed"));
        button(&c, "Import now").await;
        let start = Instant::now();
        while c.current_url().await.unwrap().path() == "/admin/import" {
            assert!(start.elapsed() < Duration::from_secs(15), "the import did not start");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        loop {
            let status = css(&c, "#job-status").await.text().await.unwrap_or_default();
            if status.contains("done") {
                break;
            }
            assert!(start.elapsed() < Duration::from_secs(30), "import did not finish: {status}");
            tokio::time::sleep(Duration::from_millis(300)).await;
        }
        let r = rows(&c, "#import-results").await;
        let errors: Vec<&String> = r.iter().filter(|t| t.contains("error")).collect();
        assert_eq!(errors.len(), 2, "{r:?}");
        assert!(errors[0].starts_with('3'), "row numbers count the header as row 1: {r:?}");
        assert_eq!(r.iter().filter(|t| t.contains("created")).count(), 2, "{r:?}");
    });
    assert_eq!(user_by_name(&s, "imp3")["department"], "Import");

    // Export the current view (Sales) as CSV and read the downloaded file.
    rt.block_on(async {
        c.goto(&format!("{base}/admin/users?department=Sales")).await.unwrap();
        open_menu(&c, "Export").await;
        button(&c, "Download").await;
    });
    let file = downloads.join("users.csv");
    let start = Instant::now();
    while !file.exists() {
        assert!(start.elapsed() < Duration::from_secs(20), "no download in {}", downloads.display());
        std::thread::sleep(Duration::from_millis(100));
    }
    std::thread::sleep(Duration::from_millis(300));
    let text = std::fs::read_to_string(&file).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 16, "header + 15 Sales users:\n{text}");
    assert!(lines[0].starts_with("_id,department,username"), "{}", lines[0]);
    assert!(lines.iter().skip(1).all(|l| l.contains(",Sales,")), "{text}");

    rt.block_on(async {
        c.close().await.unwrap();
    });
    eprintln!("screenshots in {}", shots_dir().display());
    drop(driver);
}

#[test]
fn an_administrator_required_to_use_mfa_enrols_before_anything_else() {
    let s = Server::start(&Db::Sqlite);
    let out = s
        .command()
        .args(["admin", "create", "--email", "strict@example.com", "--password", ADMIN_PW, "--require-mfa"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stdout).contains("MFA required"));
    let mut b = Browser::new(&s.base);
    let (at, page) = admin_login(&mut b, "strict@example.com");
    assert_eq!(at, "/admin/account?m=enroll", "{}", page.body);
    assert!(page.body.contains("required for your account"), "{}", page.body);
    let p = b.get("/admin/users");
    assert_eq!(p.location.as_deref(), Some("/admin/account?m=enroll"), "held on the account page");

    let p = b.post("/admin/account/totp", &[]);
    let (_, page) = b.follow(p);
    // The probe's hole: starting the enrolment must not open the portal.
    let held = b.get("/admin/users");
    assert_eq!(held.location.as_deref(), Some("/admin/account?m=enroll"), "still held after the enrolment started");
    let marker = "<code class=\"secret\">";
    let start = page.body.find(marker).unwrap_or_else(|| panic!("no key shown:\n{}", page.body)) + marker.len();
    let b32 = &page.body[start..start + page.body[start..].find('<').unwrap()];
    let secret = totp_rs::Secret::Encoded(b32.to_string()).to_bytes().unwrap();
    let code = cairn_directory::totp_code(&secret, chrono::Utc::now());
    let p = b.post("/admin/account/totp/confirm", &[("code", &code)]);
    b.follow(p);
    assert_eq!(b.get("/admin/users").status, 200, "enrolled: the portal opens");
    let p = b.post("/admin/account/totp/remove", &[]);
    let (_, page) = b.follow(p);
    assert!(page.body.contains("cannot be removed") || p_status_is_refusal(&page), "{}", page.body);

    // The next sign-in asks for a code.
    let mut b2 = Browser::new(&s.base);
    let (at, _) = admin_login(&mut b2, "strict@example.com");
    assert_eq!(at, "/admin/totp");
}

fn p_status_is_refusal(p: &common::Page) -> bool {
    p.status == 400 || p.status == 409
}
