//! Large imports through `Directory`: one into a smaller SQLite directory builds the search
//! indexes once at its end, and its users, results, events and queries are as a small
//! import's would be.

use std::sync::Arc;

use cairn_directory::domain::query::ListQuery;
use cairn_directory::{Ctx, Directory, ManualClock};
use cairn_domain::Actor;
use cairn_domain::EventQuery;
use cairn_store::{testing, Store};
use serde_json::json;

fn admin() -> Ctx {
    Ctx::new(Actor::admin("0123456789abcdef01234567", "boss@example.com"), "api", Some("10.0.0.1".into()))
}

fn q(pairs: &[(&str, &str)]) -> ListQuery {
    let p: Vec<(String, String)> = pairs.iter().map(|(a, b)| (a.to_string(), b.to_string())).collect();
    ListQuery::from_pairs(&p).unwrap()
}

#[tokio::test]
async fn a_large_import_into_a_small_directory_rebuilds_the_search_indexes_and_reads_back_right() {
    let tmp = tempfile::tempdir().unwrap();
    let store = Store::connect(&testing::sqlite_url(tmp.path())).await.unwrap();
    let d = Directory::new(store.clone(), Arc::new(ManualClock::default()));
    d.migrate().await.unwrap();
    d.update_settings(&admin(), &json!({"newSystemUserStateDefaults": {"csvImport": "STAGED"}})).await.unwrap();
    d.create_user(
        &admin(),
        &json!({"username": "user00007", "email": "someone@example.com", "lastname": "Zed"}),
        cairn_domain::CreationSource::ManualEntry,
        "api",
    )
    .await
    .unwrap();
    let n = 12_000;
    let mut csv = String::from("Username,Email,FirstName,LastName,Department,jobTitle\n");
    for i in 0..n {
        // Last names in no order, as real ones arrive. Job titles only from the second half:
        // the first users have none, so their partial indexes stay through the import and
        // must take the later ones as they come.
        let title = if i >= n / 2 && i % 2 == 0 { "Engineer" } else { "" };
        csv.push_str(&format!(
            "user{i:05},user{i:05}@example.com,First{i},Last{:05},Dept {},{title}\n",
            (i * 7919) % n,
            i % 30
        ));
    }
    // A last batch with no user to create: the record repeats an earlier username.
    csv.push_str("user00003,again@example.com,Again,Again,Dept 0,\n");
    let job = d.create_job(&admin(), "csv_import", json!({})).await.unwrap();
    let counts = d
        .run_csv_import(&admin(), &job, std::io::Cursor::new(csv.into_bytes()), Default::default(), &|_, _| {})
        .await
        .unwrap();
    assert_eq!((counts.created, counts.exists, counts.error), (n - 1, 1, 1));
    let missing = store.read().await.unwrap().db().missing_user_search_indexes().await.unwrap();
    assert_eq!(missing, Vec::<&str>::new());

    let (total, page) = d.list_users(&q(&[("sort", "lastname"), ("limit", "3")])).await.unwrap();
    assert_eq!(total, n);
    let last: Vec<_> = page.iter().map(|u| u.profile["lastname"].as_str().unwrap().to_string()).collect();
    assert_eq!(last, ["Last00000", "Last00001", "Last00002"]);
    let (found, _) = d.list_users(&q(&[("search", "last0001")])).await.unwrap();
    assert_eq!(found, 10, "Last00010 … Last00019");
    let (in_dept, _) = d.list_users(&q(&[("filter", "department:$eq:Dept 3")])).await.unwrap();
    assert_eq!(in_dept, 400);
    let (titled, page) =
        d.list_users(&q(&[("filter", "jobTitle:$eq:Engineer"), ("sort", "-lastname"), ("limit", "2")])).await.unwrap();
    assert_eq!(titled, n / 4);
    let mut expect: Vec<String> =
        (n / 2..n).filter(|i| i % 2 == 0).map(|i| format!("Last{:05}", (i * 7919) % n)).collect();
    expect.sort();
    let last: Vec<_> = page.iter().map(|u| u.profile["lastname"].as_str().unwrap().to_string()).collect();
    assert_eq!(last, [expect[expect.len() - 1].clone(), expect[expect.len() - 2].clone()]);

    let (results, _) = d.job_results(&job, Some("created"), 1, 0).await.unwrap();
    assert_eq!(results, n - 1);
    let (_, exists) = d.job_results(&job, Some("exists"), 10, 0).await.unwrap();
    assert_eq!((exists.len(), exists[0].seq), (1, 9), "row 9: the header is row 1");
    let (events, first) = d
        .list_events(&EventQuery { action: Some("user_create".into()), limit: 1, ..Default::default() })
        .await
        .unwrap();
    assert_eq!(events, n, "one per imported user and the one made by hand");
    let changes = first[0].changes.as_array().expect("changes read back as a list");
    assert!(changes.iter().all(|c| c["old"].is_null() && c["field"].is_string()), "{changes:?}");
    assert_eq!(first[0].detail, json!({"job_id": job, "state": "STAGED", "creationSource": "csv"}));

    // Activated on import: the detail names the mail each user is sent (§5.2).
    d.update_settings(&admin(), &json!({"newSystemUserStateDefaults": {"csvImport": "ACTIVATED"}})).await.unwrap();
    let csv =
        "Username,Email,Password\nmailme,mailme@example.com,\nhaspw,haspw@example.com,lantern orchard seventeen\n";
    let job = d.create_job(&admin(), "csv_import", json!({})).await.unwrap();
    d.run_csv_import(&admin(), &job, std::io::Cursor::new(csv.as_bytes().to_vec()), Default::default(), &|_, _| {})
        .await
        .unwrap();
    let (_, evs) = d
        .list_events(&EventQuery { action: Some("user_create".into()), limit: 2, ..Default::default() })
        .await
        .unwrap();
    let detail = |name: &str| evs.iter().find(|e| e.target_name.as_deref() == Some(name)).unwrap().detail.clone();
    assert_eq!(detail("mailme")["mail"]["to"], "mailme@example.com", "{:?}", detail("mailme"));
    assert_eq!(
        (detail("mailme")["state"].as_str(), detail("mailme")["job_id"].as_str()),
        (Some("ACTIVATED"), Some(job.as_str()))
    );
    assert_eq!(detail("mailme")["mail"]["type"], "activation", "no password: a link to choose one");
    assert_eq!(detail("haspw")["mail"], json!({"type": "welcome", "to": "haspw@example.com"}));
}

/// Counts past `exact_count_up_to` are counted in full once and then served from memory while
/// no user changes (issue 19): they stay exact after a change, on both databases.
async fn large_counts_are_cached_and_stay_exact(store: Store) {
    let config = cairn_directory::Config { exact_count_up_to: 2, ..Default::default() };
    let d = Directory::with_config(store, Arc::new(ManualClock::default()), config);
    d.migrate().await.unwrap();
    let create = |n: u32, dept: &'static str| {
        let d = d.clone();
        async move {
            d.create_user(
                &admin(),
                &json!({"username": format!("u{n}"), "email": format!("u{n}@example.com"), "department": dept}),
                cairn_domain::CreationSource::ManualEntry,
                "api",
            )
            .await
            .unwrap();
        }
    };
    for (n, dept) in [(1, "A"), (2, "B"), (3, "B")] {
        create(n, dept).await;
    }
    assert_eq!(d.list_users_page(&q(&[("limit", "1")])).await.unwrap().total, 3);
    assert_eq!(d.list_users_page(&q(&[("limit", "1"), ("sort", "-username")])).await.unwrap().total, 3);
    create(4, "A").await;
    assert_eq!(d.list_users_page(&q(&[("limit", "1")])).await.unwrap().total, 4, "a change is counted");
    let (_, u) = d.list_users(&q(&[("filter", "username:u1")])).await.unwrap();
    d.delete_user(&admin(), &u[0].id).await.unwrap();
    assert_eq!(d.list_users_page(&q(&[("limit", "1")])).await.unwrap().total, 3, "a deletion too");
    let small = d.list_users_page(&q(&[("filter", "department:$eq:A")])).await.unwrap();
    assert_eq!(small.total, 1, "a list within the limit is counted each time");
}

#[tokio::test]
async fn large_counts_are_cached_and_stay_exact_sqlite() {
    let tmp = tempfile::tempdir().unwrap();
    large_counts_are_cached_and_stay_exact(Store::connect(&testing::sqlite_url(tmp.path())).await.unwrap()).await;
}

#[tokio::test]
async fn large_counts_are_cached_and_stay_exact_postgres() {
    let Some(url) = testing::fresh_postgres_url("count cache on PostgreSQL").await else {
        return;
    };
    large_counts_are_cached_and_stay_exact(Store::connect(&url).await.unwrap()).await;
}
