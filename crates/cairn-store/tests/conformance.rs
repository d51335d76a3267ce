//! One store conformance suite, run on SQLite and on PostgreSQL: both backends must behave
//! the same for every query the directory relies on.

use cairn_domain::graph::{GraphKind, ResourceKind, ResourceRef, SubjectKind, SubjectRef};
use cairn_domain::query::ListQuery;
use cairn_domain::{Actor, ApiKey, Event, Group, LdapServer, LdapServerAction, Role, Secret, State, User};
use cairn_store::{testing, Account, Change, ChangeCursor, ChangeKind, EventQuery, Store, StoreError};
use chrono::{Duration, TimeZone, Utc};
use serde_json::{json, Map, Value};

fn t(secs: i64) -> chrono::DateTime<Utc> {
    Utc.timestamp_opt(1_800_000_000 + secs, 0).unwrap()
}

fn id(n: u32) -> String {
    format!("{:024x}", n)
}

fn user(n: u32, username: &str, profile: Value) -> User {
    let profile: Map<String, Value> = profile.as_object().cloned().unwrap_or_default();
    User { profile, ..User::new(id(n), username, format!("{username}@example.com"), State::Activated, t(n as i64)) }
}

fn q(pairs: &[(&str, &str)]) -> ListQuery {
    let p: Vec<(String, String)> = pairs.iter().map(|(a, b)| (a.to_string(), b.to_string())).collect();
    ListQuery::from_pairs(&p).unwrap()
}

fn names(users: &[User]) -> Vec<&str> {
    users.iter().map(|u| u.username.as_str()).collect()
}

async fn suite(store: Store) {
    store.migrate().await.unwrap();
    store.migrate().await.expect("migrating twice is a no-op");
    assert!(store.ready().await.unwrap());
    users_round_trip(&store).await;
    uniqueness(&store).await;
    listing(&store).await;
    groups(&store).await;
    associations(&store).await;
    ldap_servers(&store).await;
    radius_servers(&store).await;
    events_and_keys(&store).await;
    rollback(&store).await;
    bulk_writer(&store).await;
    change_log(&store).await;
    resumed_jobs_and_sync_links(&store).await;
}

/// An interrupted job is taken up by exactly one of the processes racing for it, and a sync's
/// links keep their digest and report their user's `updated` now (none once it is gone).
async fn resumed_jobs_and_sync_links(store: &Store) {
    let job = cairn_domain::Job {
        id: id(9000),
        kind: "directory_sync".into(),
        status: "running".into(),
        created: t(0),
        updated: t(0),
        created_by: json!({}),
        params: json!({}),
        total: 0,
        processed: 0,
        counts: json!({}),
        message: None,
    };
    let mut tx = store.begin().await.unwrap();
    tx.db().insert_job(&job).await.unwrap();
    assert!(!tx.db().resume_job(&job.id, t(5)).await.unwrap(), "a running job is not resumed");
    assert_eq!(tx.db().interrupt_jobs(t(10), t(5)).await.unwrap(), 1);
    tx.commit().await.unwrap();
    let tries = (0..6).map(|_| {
        let store = store.clone();
        let id = job.id.clone();
        tokio::spawn(async move {
            let mut tx = store.begin().await.unwrap();
            let won = tx.db().resume_job(&id, t(20)).await.unwrap();
            tx.commit().await.unwrap();
            won
        })
    });
    let mut won = 0;
    for t in tries {
        won += usize::from(t.await.unwrap());
    }
    assert_eq!(won, 1, "one process resumes it");
    let mut r = store.read().await.unwrap();
    let j = r.db().get_job(&job.id).await.unwrap().unwrap();
    assert_eq!((j.status.as_str(), j.message.as_deref()), ("running", Some("resumed after the server restarted")));
    drop(r);

    let input =
        cairn_domain::dirsync::parse_input(&json!({"name": "links", "url": "ldap://h", "userBase": "dc=x"}), true)
            .unwrap();
    let c = cairn_domain::dirsync::new_connection(id(9001), input, t(0));
    let holder = user(9002, "linked", json!({}));
    let link = |n: u32, local: &str| cairn_store::Link {
        upstream_id: format!("up-{n}"),
        local_id: local.to_string(),
        dn: format!("uid=u{n},dc=x"),
        suspended: false,
        digest: Some(format!("digest-{n}")),
        user_updated: Some(t(1)),
    };
    let mut tx = store.begin().await.unwrap();
    tx.db().insert_connection(&c).await.unwrap();
    tx.db().insert_user(&holder).await.unwrap();
    // A link written when the user was as it is now: its user is untouched since.
    let current =
        cairn_store::Link { upstream_id: "up-3".into(), user_updated: Some(holder.updated), ..link(3, &holder.id) };
    tx.db().put_links(&c.id, "user", &[link(1, &holder.id), link(2, &id(9999)), current.clone()]).await.unwrap();
    tx.commit().await.unwrap();
    let mut r = store.read().await.unwrap();
    let mut got: Vec<_> = r.db().user_links(&c.id).await.unwrap().into_values().collect();
    got.sort_by(|a, b| a.0.upstream_id.cmp(&b.0.upstream_id));
    assert_eq!(got.len(), 3);
    let stampless = |l: cairn_store::Link| cairn_store::Link { user_updated: None, ..l };
    assert_eq!(got[0], (stampless(link(1, &holder.id)), Some(false)), "the user changed since the link: touched");
    assert_eq!(got[1], (stampless(link(2, &id(9999))), None), "a user gone from Cairn");
    assert_eq!(got[2], (stampless(current), Some(true)), "the digest comes back; the user is untouched");
}

async fn users_round_trip(store: &Store) {
    let mut u = user(
        1,
        "ada",
        json!({
            "firstname": "Ada", "lastname": "Lovelace", "department": "R&D", "sudo": true,
            "unix_uid": 1001, "employeeIdentifier": "E1",
            "phoneNumbers": [{"type": "work", "number": "+44 1"}],
            "attributes": [{"name": "badge", "value": "7"}],
            "delegatedAuthority": {"id": "x", "name": "ActiveDirectory"}
        }),
    );
    u.password_hash = Some(Secret::new("$argon2id$v=19$fake"));
    u.password_date = Some(t(5));
    let mut tx = store.begin().await.unwrap();
    tx.db().insert_user(&u).await.unwrap();
    tx.commit().await.unwrap();

    let mut c = store.read().await.unwrap();
    let got = c.db().get_user(&u.id).await.unwrap().expect("stored");
    assert_eq!(got.username, "ada");
    assert_eq!(got.profile, u.profile, "every profile kind survives the round trip");
    assert_eq!(got.password_hash, u.password_hash);
    assert_eq!(got.password_date, Some(t(5)));
    assert_eq!(got.created, u.created);
    assert!(c.db().user_by_username("ADA").await.unwrap().is_some(), "lookups are case-insensitive");
    assert!(c.db().user_by_email("Ada@Example.com").await.unwrap().is_some());
    drop(c);

    let mut changed = got.clone();
    changed.state = State::Suspended;
    changed.profile.remove("sudo");
    changed.profile.insert("department".into(), json!("Ops"));
    changed.account_locked = true;
    changed.bad_login_attempts = 3;
    let mut tx = store.begin().await.unwrap();
    assert!(tx.db().update_user(&changed).await.unwrap());
    tx.commit().await.unwrap();
    let mut c = store.read().await.unwrap();
    let got = c.db().get_user(&u.id).await.unwrap().unwrap();
    assert_eq!(got.state, State::Suspended);
    assert_eq!(got.profile.get("sudo"), None, "false booleans read back as absent");
    assert_eq!(got.profile["department"], json!("Ops"));
    assert!(got.account_locked);
    assert_eq!(got.bad_login_attempts, 3);
}

async fn uniqueness(store: &Store) {
    let mut tx = store.begin().await.unwrap();
    let dup_name = user(2, "ada", json!({}));
    match tx.db().insert_user(&User { email: "other@example.com".into(), ..dup_name }).await {
        Err(StoreError::Conflict(f)) => assert_eq!(f, "username"),
        other => panic!("expected a username conflict, got {other:?}"),
    }
    drop(tx);
    let mut tx = store.begin().await.unwrap();
    match tx.db().insert_user(&user(3, "ada2", json!({"employeeIdentifier": "E1"}))).await {
        Err(StoreError::Conflict(f)) => assert_eq!(f, "employeeIdentifier"),
        other => panic!("expected an employeeIdentifier conflict, got {other:?}"),
    }
    drop(tx);
    let mut c = store.read().await.unwrap();
    let taken = c.db().user_conflicts("ada", "ada@example.com", Some("E1"), Some("nobody")).await.unwrap();
    assert_eq!(taken, vec!["username", "email", "employeeIdentifier"]);
    let none = c.db().user_conflicts("ada", "ada@example.com", None, Some(&id(1))).await.unwrap();
    assert!(none.is_empty(), "a user does not conflict with itself");
}

async fn listing(store: &Store) {
    let mut tx = store.begin().await.unwrap();
    for (n, name, dept, last, uid) in [
        (10, "bob", Some("Sales"), Some("Brown"), Some(1000)),
        (11, "carol", Some("Sales"), Some("adams"), Some(2000)),
        (12, "dave", None, None, None),
        (13, "erin_x", Some("IT"), Some("Zed"), Some(1500)),
    ] {
        let mut p = Map::new();
        if let Some(d) = dept {
            p.insert("department".into(), json!(d));
        }
        if let Some(l) = last {
            p.insert("lastname".into(), json!(l));
        }
        if let Some(u) = uid {
            p.insert("unix_uid".into(), json!(u));
        }
        let mut u = user(n, name, Value::Object(p));
        if name == "dave" {
            u.state = State::Staged;
        }
        tx.db().insert_user(&u).await.unwrap();
    }
    tx.commit().await.unwrap();
    let mut c = store.read().await.unwrap();
    let mut db = c.db();

    let (total, page) = db.list_users(&q(&[("limit", "2")])).await.unwrap();
    assert_eq!(total, 5);
    assert_eq!(names(&page), ["ada", "bob"], "default order is creation order");

    let (total, page) = db.list_users(&q(&[("filter", "department:$eq:Sales"), ("sort", "-username")])).await.unwrap();
    assert_eq!((total, names(&page)), (2, vec!["carol", "bob"]));

    let (_, page) = db.list_users(&q(&[("filter", "department:$ne:Sales")])).await.unwrap();
    assert_eq!(names(&page), ["ada", "dave", "erin_x"], "$ne includes users without a value");

    let (_, page) = db.list_users(&q(&[("filter", "unix_uid:$gte:1500"), ("sort", "unix_uid")])).await.unwrap();
    assert_eq!(names(&page), ["erin_x", "carol"]);

    let (_, page) =
        db.list_users(&q(&[("filter[or][0]", "username:bob"), ("filter[or][1]", "state:STAGED")])).await.unwrap();
    assert_eq!(names(&page), ["bob", "dave"]);

    let (_, page) = db.list_users(&q(&[("filter", "sudo:false"), ("filter", "state:$eq:ACTIVATED")])).await.unwrap();
    assert_eq!(names(&page), ["bob", "carol", "erin_x"], "booleans compare alike; ada is suspended");

    // Names sort case-insensitively ("adams" before "Brown"), NULLs first ascending and last
    // descending, on both databases; other text sorts in byte order.
    let (_, page) = db.list_users(&q(&[("sort", "lastname")])).await.unwrap();
    assert_eq!(names(&page), ["dave", "carol", "bob", "ada", "erin_x"]);
    let (_, page) = db.list_users(&q(&[("sort", "-lastname")])).await.unwrap();
    assert_eq!(names(&page), ["erin_x", "ada", "bob", "carol", "dave"]);
    // An equality filter on a name field is exact (the case-insensitive index only narrows).
    let (_, page) = db.list_users(&q(&[("filter", "lastname:$eq:brown")])).await.unwrap();
    assert!(page.is_empty());
    let (_, page) = db.list_users(&q(&[("filter", "lastname:$eq:Brown")])).await.unwrap();
    assert_eq!(names(&page), ["bob"]);

    let (total, page) = db.list_users(&q(&[("search", "SAL")])).await.unwrap();
    assert_eq!((total, names(&page)), (2, vec!["bob", "carol"]), "search is a case-insensitive substring");
    let (_, page) = db.list_users(&q(&[("search", "erin_")])).await.unwrap();
    assert_eq!(names(&page), ["erin_x"], "search= is a prefix");
    let (_, page) = db.list_users(&q(&[("search", "rin")])).await.unwrap();
    assert!(page.is_empty(), "not a substring");
    let mut sub = q(&[]);
    sub.apply_search_body(&json!({"searchFilter": {"searchTerm": "n_x"}})).unwrap();
    let (_, page) = db.list_users(&sub).await.unwrap();
    assert_eq!(names(&page), ["erin_x"], "searchFilter is a substring; LIKE wildcards in it are literal");
    sub.search = vec!["%".into()];
    assert!(db.list_users(&sub).await.unwrap().1.is_empty());
    let (_, page) = db.list_users(&q(&[("search", "%")])).await.unwrap();
    assert!(page.is_empty());

    let (total, page) = db.list_users(&q(&[("skip", "4"), ("limit", "10")])).await.unwrap();
    assert_eq!((total, page.len()), (5, 1));

    let counts = db.count_users_by_state().await.unwrap();
    let get = |s: &str| counts.iter().find(|(k, _)| k == s).map(|(_, n)| *n).unwrap_or(0);
    assert_eq!((get("ACTIVATED"), get("STAGED"), get("SUSPENDED")), (3, 1, 1));
}

async fn groups(store: &Store) {
    let g = Group {
        id: id(100),
        name: "Engineering".into(),
        description: Some("builders".into()),
        email: None,
        attributes: Some(json!({"posixGroups": [{"id": 5000, "name": "eng"}]})),
        membership_method: None,
        unix_gid: Some(5000),
        created: t(100),
        updated: t(100),
    };
    let mut tx = store.begin().await.unwrap();
    tx.db().insert_group(&g).await.unwrap();
    assert!(tx.db().add_member(&g.id, &id(10), t(101)).await.unwrap());
    assert!(!tx.db().add_member(&g.id, &id(10), t(102)).await.unwrap(), "adding twice changes nothing");
    assert!(tx.db().add_member(&g.id, &id(11), t(103)).await.unwrap());
    tx.commit().await.unwrap();

    let mut tx = store.begin().await.unwrap();
    let dup = Group { id: id(101), name: "ENGINEERING".into(), ..g.clone() };
    assert!(matches!(tx.db().insert_group(&dup).await, Err(StoreError::Conflict(f)) if f == "name"));
    drop(tx);

    let mut c = store.read().await.unwrap();
    assert_eq!(c.db().get_group(&g.id).await.unwrap(), Some(g.clone()));
    assert!(c.db().group_by_name("engineering").await.unwrap().is_some());
    let (n, members) = c.db().group_members(&g.id, 10, 0).await.unwrap();
    assert_eq!((n, members), (2, vec![id(10), id(11)]));
    // Counted from the memberships alone when nothing else is asked, joined otherwise.
    let all = q(&[]);
    assert_eq!(c.db().count_users_in_group(&all, &g.id).await.unwrap(), 2);
    assert_eq!(c.db().count_users_in_group_up_to(&all, &g.id, 1).await.unwrap(), None);
    assert_eq!(c.db().count_users_in_group_up_to(&all, &g.id, 2).await.unwrap(), Some(2));
    let name = c.db().get_user(&id(11)).await.unwrap().unwrap().username;
    let one = q(&[("filter", &format!("username:$eq:{name}"))]);
    assert_eq!(c.db().count_users_in_group(&one, &g.id).await.unwrap(), 1);
    assert_eq!(c.db().count_users_in_group_up_to(&one, &g.id, 5).await.unwrap(), Some(1));
    assert_eq!(c.db().count_users_in_group(&all, &id(999)).await.unwrap(), 0, "no such group");
    // A group's page: by id, from the start and at an offset (read from the membership key on
    // SQLite), and with another filter (joined with the users).
    let ids = |l: (i64, Vec<User>)| (l.0, l.1.into_iter().map(|u| u.id).collect::<Vec<_>>());
    assert_eq!(ids(c.db().list_users_in_group(&all, &g.id, None).await.unwrap()), (2, vec![id(10), id(11)]));
    let second = q(&[("limit", "1"), ("skip", "1")]);
    assert_eq!(ids(c.db().list_users_in_group(&second, &g.id, Some(2)).await.unwrap()), (2, vec![id(11)]));
    assert_eq!(ids(c.db().list_users_in_group(&one, &g.id, None).await.unwrap()), (1, vec![id(11)]));
    // Sorted by last name: the members read and sorted (a page as large as the directory), or
    // the users walked in that order (a page of one in a directory of a few).
    let by_last = q(&[("sort", "lastname")]);
    assert_eq!(ids(c.db().list_users_in_group(&by_last, &g.id, None).await.unwrap()), (2, vec![id(11), id(10)]));
    let last_first = q(&[("sort", "-lastname"), ("limit", "1")]);
    assert_eq!(ids(c.db().list_users_in_group(&last_first, &g.id, None).await.unwrap()), (2, vec![id(10)]));
    let last_second = q(&[("sort", "lastname"), ("limit", "1"), ("skip", "1")]);
    assert_eq!(ids(c.db().list_users_in_group(&last_second, &g.id, None).await.unwrap()), (2, vec![id(10)]));
    assert_eq!(ids(c.db().list_users_in_group(&all, &id(999), None).await.unwrap()), (0, vec![]));
    assert_eq!(c.db().groups_of_user(&id(11)).await.unwrap().len(), 1);
    let (n, list) = c.db().list_groups(Some("engineering"), 10, 0).await.unwrap();
    assert_eq!((n, list.len()), (1, 1));
    drop(c);

    let mut tx = store.begin().await.unwrap();
    assert!(tx.db().delete_user(&id(11)).await.unwrap());
    assert!(tx.db().remove_member(&g.id, &id(10)).await.unwrap());
    assert!(!tx.db().remove_member(&g.id, &id(10)).await.unwrap());
    tx.commit().await.unwrap();
    let mut c = store.read().await.unwrap();
    let (n, _) = c.db().group_members(&g.id, 10, 0).await.unwrap();
    assert_eq!(n, 0, "deleting a user removes its memberships");
    assert_eq!(c.db().count_users_in_group(&q(&[]), &g.id).await.unwrap(), 0);
    drop(c);
    let mut tx = store.begin().await.unwrap();
    assert!(tx.db().delete_group(&g.id).await.unwrap());
    tx.commit().await.unwrap();
}

fn group(n: u32, name: &str) -> Group {
    Group {
        id: id(n),
        name: name.into(),
        description: None,
        email: None,
        attributes: None,
        membership_method: None,
        unix_gid: None,
        created: t(n as i64),
        updated: t(n as i64),
    }
}

/// The graph: adding and removing associations, both lists, the grant (direct or through a
/// group), and rows going with their user or group.
async fn associations(store: &Store) {
    let (ada, bob) = (SubjectRef::new(SubjectKind::User, id(600)), SubjectRef::new(SubjectKind::User, id(601)));
    let ops = SubjectRef::new(SubjectKind::UserGroup, id(610));
    let ldap = ResourceRef::new(ResourceKind::LdapServer, id(620));
    let other_ldap = ResourceRef::new(ResourceKind::LdapServer, id(621));
    let radius = ResourceRef::new(ResourceKind::RadiusServer, id(622));
    let app = ResourceRef::new(ResourceKind::Application, id(623));
    // The same id under another type is another resource.
    let radius_with_ldaps_id = ResourceRef::new(ResourceKind::RadiusServer, id(620));

    let mut tx = store.begin().await.unwrap();
    tx.db().insert_user(&user(600, "graph-ada", json!({}))).await.unwrap();
    tx.db().insert_user(&user(601, "graph-bob", json!({}))).await.unwrap();
    tx.db().insert_group(&group(610, "graph-ops")).await.unwrap();
    assert!(tx.db().add_association(&ada, &ldap, t(630)).await.unwrap());
    assert!(!tx.db().add_association(&ada, &ldap, t(631)).await.unwrap(), "adding twice changes nothing");
    assert!(tx.db().add_association(&ada, &app, t(632)).await.unwrap());
    assert!(tx.db().add_association(&ada, &radius, t(633)).await.unwrap());
    assert!(tx.db().add_association(&ops, &ldap, t(634)).await.unwrap());
    assert!(tx.db().add_association(&ops, &radius_with_ldaps_id, t(635)).await.unwrap());
    tx.commit().await.unwrap();

    let mut c = store.read().await.unwrap();
    let mut db = c.db();
    assert_eq!(db.subject_name(&ada).await.unwrap().as_deref(), Some("graph-ada"));
    assert_eq!(db.subject_name(&ops).await.unwrap().as_deref(), Some("graph-ops"));
    assert_eq!(db.subject_name(&SubjectRef::new(SubjectKind::UserGroup, id(600))).await.unwrap(), None);
    let (n, v) = db.resources_of(&ada, &[ResourceKind::LdapServer], 10, 0).await.unwrap();
    assert_eq!((n, v), (1, vec![ldap.clone()]));
    let (n, v) = db.resources_of(&ada, ResourceKind::ALL, 10, 0).await.unwrap();
    assert_eq!(n, 3);
    assert_eq!(v, [app.clone(), ldap.clone(), radius.clone()], "by type, then id");
    let (n, v) = db.resources_of(&ada, ResourceKind::ALL, 1, 1).await.unwrap();
    assert_eq!((n, v), (3, vec![ldap.clone()]), "paged; the count is of all");
    assert_eq!(db.resources_of(&bob, ResourceKind::ALL, 10, 0).await.unwrap(), (0, vec![]));
    assert_eq!(db.resources_of(&ada, &[], 10, 0).await.unwrap(), (0, vec![]));
    let (n, v) = db.subjects_of(&ldap, &[SubjectKind::User, SubjectKind::UserGroup], 10, 0).await.unwrap();
    assert_eq!((n, v), (2, vec![ada.clone(), ops.clone()]));
    let (n, v) = db.subjects_of(&ldap, &[SubjectKind::UserGroup], 10, 0).await.unwrap();
    assert_eq!((n, v), (1, vec![ops.clone()]));
    assert_eq!(db.subjects_of(&other_ldap, &[SubjectKind::User], 10, 0).await.unwrap(), (0, vec![]));

    assert!(db.granted(&ada.id, &ldap).await.unwrap(), "directly");
    assert!(!db.granted(&ada.id, &other_ldap).await.unwrap(), "another resource");
    assert!(!db.granted(&bob.id, &ldap).await.unwrap());
    assert!(!db.granted(&bob.id, &radius_with_ldaps_id).await.unwrap());
    drop(c);

    let mut tx = store.begin().await.unwrap();
    assert!(tx.db().add_member(&ops.id, &bob.id, t(640)).await.unwrap());
    tx.commit().await.unwrap();
    let mut c = store.read().await.unwrap();
    assert!(c.db().granted(&bob.id, &ldap).await.unwrap(), "through a group");
    assert!(c.db().granted(&bob.id, &radius_with_ldaps_id).await.unwrap());
    assert!(!c.db().granted(&bob.id, &radius).await.unwrap(), "not what only ada has");
    assert!(!c.db().granted(&bob.id, &other_ldap).await.unwrap());
    drop(c);

    let mut tx = store.begin().await.unwrap();
    assert!(tx.db().remove_member(&ops.id, &bob.id).await.unwrap());
    tx.commit().await.unwrap();
    let mut c = store.read().await.unwrap();
    assert!(!c.db().granted(&bob.id, &ldap).await.unwrap(), "not after leaving the group");
    drop(c);

    // Both grants at once: losing one keeps the other.
    let mut tx = store.begin().await.unwrap();
    assert!(tx.db().add_member(&ops.id, &ada.id, t(641)).await.unwrap());
    assert!(tx.db().remove_association(&ada, &ldap).await.unwrap());
    assert!(!tx.db().remove_association(&ada, &ldap).await.unwrap(), "removing twice changes nothing");
    tx.commit().await.unwrap();
    let mut c = store.read().await.unwrap();
    assert!(c.db().granted(&ada.id, &ldap).await.unwrap(), "still through the group");
    drop(c);

    let mut tx = store.begin().await.unwrap();
    assert!(tx.db().delete_group(&ops.id).await.unwrap());
    tx.commit().await.unwrap();
    let mut c = store.read().await.unwrap();
    assert!(!c.db().granted(&ada.id, &ldap).await.unwrap(), "the group and its grants are gone");
    assert_eq!(c.db().subjects_of(&ldap, SubjectKind::ALL, 10, 0).await.unwrap(), (0, vec![]));
    assert_eq!(c.db().subjects_of(&radius_with_ldaps_id, SubjectKind::ALL, 10, 0).await.unwrap().0, 0);
    drop(c);

    let mut tx = store.begin().await.unwrap();
    assert!(tx.db().add_association(&bob, &app, t(642)).await.unwrap());
    assert!(tx.db().delete_user(&ada.id).await.unwrap());
    tx.commit().await.unwrap();
    let mut c = store.read().await.unwrap();
    assert_eq!(c.db().resources_of(&ada, ResourceKind::ALL, 10, 0).await.unwrap(), (0, vec![]));
    let (n, v) = c.db().subjects_of(&app, SubjectKind::ALL, 10, 0).await.unwrap();
    assert_eq!((n, v), (1, vec![bob.clone()]), "deleting a user removes only its own");
    drop(c);

    let mut tx = store.begin().await.unwrap();
    assert_eq!(tx.db().remove_resource_associations(&app).await.unwrap(), 1);
    tx.commit().await.unwrap();
    let mut c = store.read().await.unwrap();
    assert_eq!(c.db().resources_of(&bob, ResourceKind::ALL, 10, 0).await.unwrap(), (0, vec![]));
}

async fn ldap_servers(store: &Store) {
    let s = LdapServer {
        id: id(700),
        name: "Cairn LDAP".into(),
        user_lockout_action: LdapServerAction::Disable,
        user_password_expiration_action: LdapServerAction::Remove,
        created: t(700),
    };
    let mut tx = store.begin().await.unwrap();
    tx.db().lock_setup().await.unwrap();
    tx.db().insert_ldap_server(&s).await.unwrap();
    tx.commit().await.unwrap();
    let mut c = store.read().await.unwrap();
    assert_eq!(c.db().get_ldap_server(&s.id).await.unwrap(), Some(s.clone()));
    assert_eq!(c.db().get_ldap_server(&id(701)).await.unwrap(), None);
    assert_eq!(c.db().ldap_servers(10, 0).await.unwrap(), (1, vec![s]));
    assert_eq!(c.db().ldap_servers(10, 1).await.unwrap().1, vec![]);
}

async fn radius_servers(store: &Store) {
    use cairn_domain::radius::{RadiusAction, RadiusMfa, RadiusServer, Source};
    let a = RadiusServer {
        id: id(710),
        name: "Office Wi-Fi".into(),
        source: Source::parse("10.0.0.0/24").unwrap(),
        sealed_secret: "v1:sealed".into(),
        mfa: RadiusMfa::Required,
        user_lockout_action: RadiusAction::Maintain,
        user_password_expiration_action: RadiusAction::Remove,
        user_password_enabled: true,
        created: t(710),
    };
    let b = RadiusServer {
        id: id(711),
        name: "VPN".into(),
        source: Source::parse("2001:db8::1").unwrap(),
        created: t(711),
        ..a.clone()
    };
    let mut tx = store.begin().await.unwrap();
    tx.db().lock_radius_servers().await.unwrap();
    tx.db().insert_radius_server(&a).await.unwrap();
    tx.db().insert_radius_server(&b).await.unwrap();
    tx.commit().await.unwrap();
    let mut c = store.read().await.unwrap();
    assert_eq!(c.db().get_radius_server(&a.id, false).await.unwrap(), Some(a.clone()));
    assert_eq!(c.db().radius_servers(10, 0).await.unwrap(), (2, vec![a.clone(), b.clone()]), "oldest first");
    assert_eq!(c.db().radius_servers(1, 1).await.unwrap().1, vec![b.clone()]);
    drop(c);
    let changed = RadiusServer {
        name: "Lobby".into(),
        source: Source::parse("192.0.2.7").unwrap(),
        sealed_secret: "v1:other".into(),
        mfa: RadiusMfa::Disabled,
        user_lockout_action: RadiusAction::Remove,
        user_password_expiration_action: RadiusAction::Maintain,
        user_password_enabled: false,
        ..a.clone()
    };
    let mut tx = store.begin().await.unwrap();
    assert_eq!(tx.db().get_radius_server(&a.id, true).await.unwrap(), Some(a.clone()));
    assert!(tx.db().update_radius_server(&changed).await.unwrap());
    assert!(tx.db().delete_radius_server(&b.id).await.unwrap());
    assert!(!tx.db().delete_radius_server(&b.id).await.unwrap());
    tx.commit().await.unwrap();
    let mut c = store.read().await.unwrap();
    assert_eq!(c.db().radius_servers(10, 0).await.unwrap(), (1, vec![changed]));
    assert_eq!(c.db().get_radius_server(&id(799), false).await.unwrap(), None);
}

async fn events_and_keys(store: &Store) {
    let mut tx = store.begin().await.unwrap();
    for (n, action, target) in [(200, "user_create", "u1"), (201, "user_update", "u1"), (202, "user_create", "u2")] {
        tx.db()
            .insert_event(&Event {
                id: id(n),
                time: t(n as i64),
                actor: Actor::apikey("k", "key"),
                action: action.into(),
                target_kind: Some("user".into()),
                target_id: Some(target.into()),
                target_name: Some(target.into()),
                source: "api".into(),
                client_addr: Some("127.0.0.1".into()),
                outcome: "success".into(),
                changes: json!([{"field": "x", "old": null, "new": 1}]),
                detail: json!({}),
            })
            .await
            .unwrap();
    }
    tx.db().put_organization(&id(300), "Org", "{}", t(0)).await.unwrap();
    tx.db().put_organization(&id(300), "Org", "{\"a\":1}", t(0)).await.unwrap();
    let key = ApiKey {
        id: id(400),
        name: "ci".into(),
        role: Role::ReadOnly,
        key_hash: "abc".into(),
        prefix: "cairn_x".into(),
        created: t(0),
        created_by: None,
        last_used: None,
    };
    tx.db().insert_apikey(&key).await.unwrap();
    tx.commit().await.unwrap();

    let mut c = store.read().await.unwrap();
    let mut db = c.db();
    let eq = |target: Option<&str>, action: Option<&str>| EventQuery {
        target_id: target.map(String::from),
        action: action.map(String::from),
        limit: 10,
        ..Default::default()
    };
    let (n, evs) = db.list_events(&eq(Some("u1"), None)).await.unwrap();
    assert_eq!(n, 2);
    assert_eq!(evs[0].action, "user_update", "newest first");
    assert_eq!(evs[0].changes, json!([{"field": "x", "old": null, "new": 1}]));
    let (n, _) = db.list_events(&eq(None, Some("user_create"))).await.unwrap();
    assert_eq!(n, 2);
    let (n, _) = db
        .list_events(&EventQuery { since: Some(t(201)), until: Some(t(201)), limit: 10, ..Default::default() })
        .await
        .unwrap();
    assert_eq!(n, 1);
    let (oid, _, settings, _) = db.organization().await.unwrap().unwrap();
    assert_eq!((oid, settings), (id(300), "{\"a\":1}".to_string()));
    let k = db.apikey_by_hash("abc").await.unwrap().unwrap();
    assert_eq!((k.role, k.last_used), (Role::ReadOnly, None));
    db.touch_apikey(&k.id, t(9)).await.unwrap();
    assert_eq!(db.get_apikey(&k.id).await.unwrap().unwrap().last_used, Some(t(9)));
    assert!(db.delete_apikey(&k.id).await.unwrap());
    assert!(db.apikey_by_hash("abc").await.unwrap().is_none());
}

async fn rollback(store: &Store) {
    let mut tx = store.begin().await.unwrap();
    tx.db().insert_user(&user(500, "ghost", json!({}))).await.unwrap();
    drop(tx); // never committed
    let mut c = store.read().await.unwrap();
    assert!(c.db().user_by_username("ghost").await.unwrap().is_none(), "an uncommitted change leaves nothing");
    drop(c);
    // A credential's last use is not a change counts or read models must see.
    let before = store.local_commits();
    let mut tx = store.begin().await.unwrap();
    tx.db().touch_apikey("no-such-key", t(1)).await.unwrap();
    tx.commit_unlogged().await.unwrap();
    assert_eq!(store.local_commits(), before);
    let mut tx = store.begin().await.unwrap();
    tx.db().touch_apikey("no-such-key", t(2)).await.unwrap();
    tx.commit().await.unwrap();
    assert_eq!(store.local_commits(), before + 1);
    let _ = Duration::zero();
}

/// A bulk writer's transactions land whether or not checkpoints run behind it, and its
/// connection never goes back to the pool with the bulk settings (finished or dropped).
async fn bulk_writer(store: &Store) {
    let mut w = store.writer().await.unwrap();
    for batch in 0..3u32 {
        let users: Vec<User> =
            (0..50).map(|i| user(1000 + batch * 50 + i, &format!("bulk{batch}-{i}"), json!({}))).collect();
        let mut tx = w.begin().await.unwrap();
        tx.db().insert_users(&users).await.unwrap();
        tx.commit().await.unwrap();
        w.committed().await;
    }
    // A held transaction spans parts; a part rolled back leaves the others, and nothing is
    // seen until the held transaction commits.
    w.hold().await.unwrap();
    assert!(w.begin().await.is_err(), "no second transaction while one is held");
    for (n, keep) in [(3000, true), (3001, false), (3002, true)] {
        let mut part = w.part().await.unwrap();
        part.db().insert_user(&user(n, &format!("held-{n}"), json!({}))).await.unwrap();
        match keep {
            true => part.commit().await.unwrap(),
            false => part.rollback().await.unwrap(),
        }
    }
    let mut r = store.read().await.unwrap();
    assert!(r.db().user_by_username("held-3000").await.unwrap().is_none(), "not committed yet");
    drop(r);
    assert!(w.held_for().is_some());
    w.commit_held().await.unwrap();
    assert!(w.held_for().is_none() && w.part().await.is_err());
    let mut r = store.read().await.unwrap();
    assert!(r.db().user_by_username("held-3000").await.unwrap().is_some());
    assert!(r.db().user_by_username("held-3001").await.unwrap().is_none(), "the part rolled back");
    assert!(r.db().user_by_username("held-3002").await.unwrap().is_some());
    drop(r);
    // Index builds sort in temporary files, then the connection goes back to memory for them.
    w.build_user_search_indexes().await.unwrap();
    // A transaction still held at the end is committed by `finish`.
    w.hold().await.unwrap();
    let mut part = w.part().await.unwrap();
    part.db().insert_user(&user(3003, "held-3003", json!({}))).await.unwrap();
    part.commit().await.unwrap();
    w.finish().await.unwrap();
    // Everything the writer wrote is in the database and the WAL is cut back: the next
    // ordinary commit has nothing of the writer's to copy or to shrink.
    if let Some(path) = store.url().strip_prefix("sqlite://") {
        let wal = std::fs::metadata(format!("{}-wal", path.split('?').next().unwrap())).map_or(0, |m| m.len());
        assert_eq!(wal, 0, "the WAL a bulk writer leaves");
    }
    let mut dropped = store.writer().await.unwrap();
    let mut tx = dropped.begin().await.unwrap();
    tx.db().insert_user(&user(2000, "half-written", json!({}))).await.unwrap();
    drop(tx);
    drop(dropped); // an import that failed half-way
    let mut conns = vec![];
    for _ in 0..8 {
        conns.push(store.read().await.unwrap());
    }
    let c = &mut conns[0];
    assert!(c.db().user_by_username("bulk2-49").await.unwrap().is_some(), "every committed batch is there");
    assert!(c.db().user_by_username("half-written").await.unwrap().is_none());
    assert!(c.db().user_by_username("held-3003").await.unwrap().is_some(), "finish commits what is held");
    for c in conns.iter_mut() {
        if let Some(n) = testing::sqlite_pragma(c, "wal_autocheckpoint").await {
            assert_eq!(n, 1000, "checkpoints are back on every pooled connection");
            assert_eq!(testing::sqlite_pragma(c, "cache_size").await, Some(-2000), "and the usual page cache");
            assert_eq!(testing::sqlite_pragma(c, "temp_store").await, Some(2), "and temporary storage in memory");
        }
    }
}

#[tokio::test]
async fn conformance_sqlite() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::connect(&testing::sqlite_url(dir.path())).await.unwrap();
    suite(store).await;
}

#[tokio::test]
async fn conformance_postgres() {
    let Some(url) = testing::fresh_postgres_url("store conformance on PostgreSQL").await else {
        return;
    };
    let store = Store::connect(&url).await.unwrap();
    suite(store).await;
}

/// Usernames are stored as given, unique and found case-insensitively (§2.1), on both
/// databases: lookups, conflicts, the import's key lookup, filters, prefix search and sort.
async fn usernames_keep_case(store: Store) {
    store.migrate().await.unwrap();
    let mut tx = store.begin().await.unwrap();
    tx.db().insert_user(&user(1, "Salt-Dave", json!({}))).await.unwrap();
    tx.db().insert_user(&user(2, "alice", json!({}))).await.unwrap();
    tx.db().insert_user(&user(3, "Bob", json!({}))).await.unwrap();
    tx.commit().await.unwrap();
    let mut tx = store.begin().await.unwrap();
    let mut twin = user(4, "salt-dave", json!({}));
    twin.email = "other@example.com".into();
    assert!(
        matches!(tx.db().insert_user(&twin).await, Err(StoreError::Conflict(f)) if f == "username"),
        "Dave and dave cannot both exist"
    );
    drop(tx);
    let mut c = store.read().await.unwrap();
    for name in ["Salt-Dave", "salt-dave", "SALT-DAVE"] {
        let u = c.db().user_by_username(name).await.unwrap().expect(name);
        assert_eq!(u.username, "Salt-Dave", "stored exactly as given");
    }
    assert_eq!(c.db().user_conflicts("SALT-dave", "x@example.com", None, None).await.unwrap(), ["username"]);
    assert!(c.db().user_conflicts("SALT-dave", "x@example.com", None, Some(&id(1))).await.unwrap().is_empty());
    let found = c.db().users_matching(&["salt-dave".into(), "bob".into()], &[]).await.unwrap();
    assert_eq!(found.iter().map(|u| u.username.as_str()).collect::<Vec<_>>(), ["Salt-Dave", "Bob"]);
    let (_, v) = c.db().list_users(&q(&[("filter", "username:$eq:SALT-DAVE")])).await.unwrap();
    assert_eq!(names(&v), ["Salt-Dave"]);
    let (_, v) = c.db().list_users(&q(&[("filter", "username:$ne:salt-dave"), ("sort", "username")])).await.unwrap();
    assert_eq!(names(&v), ["alice", "Bob"], "sorted case-insensitively");
    let (_, v) = c.db().list_users(&q(&[("sort", "-username")])).await.unwrap();
    assert_eq!(names(&v), ["Salt-Dave", "Bob", "alice"]);
    let (_, v) = c.db().list_users(&q(&[("search", "sALT")])).await.unwrap();
    assert_eq!(names(&v), ["Salt-Dave"]);
}

#[tokio::test]
async fn usernames_keep_case_sqlite() {
    let dir = tempfile::tempdir().unwrap();
    usernames_keep_case(Store::connect(&testing::sqlite_url(dir.path())).await.unwrap()).await;
}

#[tokio::test]
async fn usernames_keep_case_postgres() {
    let Some(url) = testing::fresh_postgres_url("username case on PostgreSQL").await else {
        return;
    };
    usernames_keep_case(Store::connect(&url).await.unwrap()).await;
}

async fn changes(store: &Store, cursor: &mut ChangeCursor) -> Vec<Change> {
    let (list, next) = store.read().await.unwrap().db().changes_after(cursor).await.unwrap().expect("not behind");
    *cursor = next;
    list
}

fn change(kind: ChangeKind, id: &str) -> Change {
    Change { kind, id: id.to_string() }
}

/// Every write a read model shows is logged once, by the triggers, and nothing else is; on
/// PostgreSQL a transaction that commits after a later one is still read.
async fn change_log(store: &Store) {
    let mut cur = store.read().await.unwrap().db().change_cursor().await.unwrap();
    assert_eq!(changes(store, &mut cur).await, vec![], "nothing after a fresh cursor");
    let before = store.local_commits();
    let u = user(900, "logged", json!({}));
    let mut tx = store.begin().await.unwrap();
    tx.db().insert_user(&u).await.unwrap();
    tx.commit().await.unwrap();
    assert!(store.local_commits() > before, "commits are counted");
    assert_eq!(changes(store, &mut cur).await, vec![change(ChangeKind::User, &u.id)]);
    assert_eq!(changes(store, &mut cur).await, vec![], "each change is read once");

    // A failed sign-in's counters are no read model's business.
    let mut tx = store.begin().await.unwrap();
    let l = cairn_domain::lockout::Lockout { failures: 3, locked: false, locked_at: None };
    tx.db().set_lockout(Account::User, &u.id, &l).await.unwrap();
    tx.commit().await.unwrap();
    assert_eq!(changes(store, &mut cur).await, vec![]);
    // A lock is.
    let mut tx = store.begin().await.unwrap();
    let l = cairn_domain::lockout::Lockout { failures: 10, locked: true, locked_at: Some(t(5)) };
    tx.db().set_lockout(Account::User, &u.id, &l).await.unwrap();
    tx.commit().await.unwrap();
    assert_eq!(changes(store, &mut cur).await, vec![change(ChangeKind::User, &u.id)]);

    let g = group(901, "logged-group");
    let ldap = ResourceRef { kind: ResourceKind::LdapServer, id: id(902) };
    let mut tx = store.begin().await.unwrap();
    tx.db().insert_group(&g).await.unwrap();
    tx.db().add_member(&g.id, &u.id, t(6)).await.unwrap();
    let s = SubjectRef { kind: SubjectKind::UserGroup, id: g.id.clone() };
    tx.db().add_association(&s, &ldap, t(6)).await.unwrap();
    tx.commit().await.unwrap();
    assert_eq!(
        changes(store, &mut cur).await,
        vec![change(ChangeKind::Group, &g.id), change(ChangeKind::Members, &g.id), change(ChangeKind::Grant, &ldap.id)]
    );
    let mut tx = store.begin().await.unwrap();
    tx.db().delete_user(&u.id).await.unwrap();
    tx.commit().await.unwrap();
    let got = changes(store, &mut cur).await;
    assert!(got.contains(&change(ChangeKind::User, &u.id)), "{got:?}");

    // Read model loads: users by id (in any state), groups with members, a resource's subjects.
    let mut staged = user(903, "staged-one", json!({}));
    staged.state = State::Staged;
    let active = user(904, "active-one", json!({}));
    let mut tx = store.begin().await.unwrap();
    tx.db().insert_user(&staged).await.unwrap();
    tx.db().insert_user(&active).await.unwrap();
    tx.db().add_member(&g.id, &active.id, t(7)).await.unwrap();
    tx.commit().await.unwrap();
    let mut c = store.read().await.unwrap();
    let shown: Vec<&'static cairn_domain::fields::Field> =
        cairn_domain::fields::PROFILE.iter().filter(|f| f.name == "firstname").collect();
    let two = c.db().read_user_views(&[staged.id.clone(), active.id.clone(), id(999)], &shown).await.unwrap();
    assert_eq!(two.len(), 2);
    let view = two.iter().find(|u| u.id == active.id).unwrap();
    assert_eq!((view.username.as_str(), view.state), (active.username.as_str(), active.state));
    assert!(view.password_hash.is_none() && view.totp_secret.is_none(), "a view holds no secret");
    assert!(view.profile.keys().all(|k| k == "firstname"), "{:?}", view.profile);
    let gs = c.db().groups_with_members(Some(std::slice::from_ref(&g.id))).await.unwrap();
    assert_eq!(gs.len(), 1);
    assert_eq!(gs[0].1, vec![active.id.clone()]);
    assert!(c.db().groups_with_members(None).await.unwrap().iter().any(|(x, _)| x.id == g.id));
    assert_eq!(c.db().all_subjects_of(&ldap).await.unwrap(), vec![(SubjectKind::UserGroup, g.id.clone())]);
    drop(c);
    changes(store, &mut cur).await;

    if store.backend() == cairn_store::Backend::Postgres {
        // A takes its sequence number first and commits last.
        let (a, b) = (user(910, "early-taker", json!({})), user(911, "late-taker", json!({})));
        let mut ta = store.begin().await.unwrap();
        ta.db().insert_user(&a).await.unwrap();
        let mut tb = store.begin().await.unwrap();
        tb.db().insert_user(&b).await.unwrap();
        tb.commit().await.unwrap();
        assert_eq!(changes(store, &mut cur).await, vec![change(ChangeKind::User, &b.id)]);
        ta.commit().await.unwrap();
        assert_eq!(changes(store, &mut cur).await, vec![change(ChangeKind::User, &a.id)], "the late commit is read");
        assert_eq!(changes(store, &mut cur).await, vec![]);
    }

    let mut tx = store.begin().await.unwrap();
    assert!(tx.db().prune_changes(Utc::now() + Duration::hours(1)).await.unwrap() > 0);
    tx.commit().await.unwrap();
    if let ChangeCursor::Seq(_) = cur {
        let stale = ChangeCursor::Seq(1);
        let mut tx = store.begin().await.unwrap();
        tx.db().insert_user(&user(920, "after-prune", json!({}))).await.unwrap();
        tx.commit().await.unwrap();
        let r = store.read().await.unwrap().db().changes_after(&stale).await.unwrap();
        assert!(r.is_none(), "a reader behind pruned rows is told to load everything");
    }
}

/// Keyset paging (issue 19): walking a list by `nextCursor` gives exactly the rows `skip`
/// gives, in the same order, for every sort direction, NULLs (first ascending, last
/// descending), ties (broken by the id) and several sort fields, on both databases.
async fn cursor_paging(store: Store) {
    store.migrate().await.unwrap();
    let lasts = [Some("Smith"), None, Some("adams"), Some("Smith"), Some("SMITH"), None, Some("Zed"), Some("brown")];
    let mut tx = store.begin().await.unwrap();
    for n in 0..23u32 {
        let mut p = Map::new();
        if let Some(l) = lasts[(n as usize * 5) % lasts.len()] {
            p.insert("lastname".into(), json!(l));
        }
        p.insert("department".into(), json!(if n % 3 == 0 { "Sales" } else { "IT" }));
        if n % 4 != 0 {
            p.insert("unix_uid".into(), json!(1000 + (n % 5)));
        }
        // Ids not in creation order, so that the tie-breaker is visible.
        let mut u = user((n * 7919) % 1000 + 1, &format!("user{n:02}"), Value::Object(p));
        if n % 6 == 0 {
            u.state = State::Suspended;
        }
        // The portal's other filters (issue 19): locked, password status, TOTP, a job title.
        u.account_locked = n % 5 == 0;
        u.password_expired = n % 7 == 2;
        u.totp_enabled = n % 3 == 1;
        if n % 4 != 1 {
            u.password_hash = Some(cairn_domain::Secret::new("hash"));
        }
        if n % 3 != 2 {
            u.profile.insert("jobTitle".into(), json!(if n % 2 == 0 { "Engineer" } else { "Clerk" }));
        }
        // Mostly empty columns, sorted through partial indexes (issue 19), with ties.
        if n % 3 == 0 {
            u.profile.insert("description".into(), json!(format!("desc {}", n % 4)));
        }
        if n % 2 == 0 {
            u.profile.insert("employeeIdentifier".into(), json!(format!("E{:02}", 40 - n)));
        }
        if n % 4 == 1 {
            u.profile.insert("manager".into(), json!(id(n % 3 + 1)));
        }
        if n % 5 == 1 {
            u.profile.insert("alternateEmail".into(), json!(format!("alt{}@example.com", n % 2)));
        }
        if n % 4 != 1 {
            u.password_date = Some(t(i64::from(n % 3)));
        }
        tx.db().insert_user(&u).await.unwrap();
    }
    tx.commit().await.unwrap();
    let mut c = store.read().await.unwrap();
    let mut db = c.db();
    // Each filter matches the users it names (a boolean is written as a literal condition).
    for (filter, n) in [
        ("account_locked:$eq:true", (0..23).filter(|n| n % 5 == 0).count()),
        ("account_locked:$ne:true", (0..23).filter(|n| n % 5 != 0).count()),
        ("password_expired:$eq:true", (0..23).filter(|n| n % 7 == 2).count()),
        ("totp_enabled:$eq:false", (0..23).filter(|n| n % 3 != 1).count()),
        ("activated:$eq:false", (0..23).filter(|n| n % 4 == 1).count()),
        ("activated:$eq:true", (0..23).filter(|n| n % 4 != 1).count()),
        ("jobTitle:$eq:Clerk", (0..23).filter(|n| n % 3 != 2 && n % 2 == 1).count()),
    ] {
        assert_eq!(db.count_users(&q(&[("filter", filter)])).await.unwrap(), n as i64, "{filter}");
    }
    for sort in [
        "",
        "lastname",
        "-lastname",
        "-department,lastname",
        "unix_uid",
        "-unix_uid",
        "-username",
        "-_id",
        "email",
        "-created",
        "activated",
        "-activated",
        "account_locked",
        "-account_locked",
        "-totp_enabled",
        "password_expired",
        "-account_locked,lastname",
        "jobTitle",
        "description",
        "-description",
        "employeeIdentifier",
        "-employeeIdentifier",
        "manager",
        "-manager",
        "alternateEmail",
        "password_date",
        "-password_date",
    ] {
        for filter in [
            ("", ""),
            ("filter", "department:$eq:Sales"),
            ("filter", "state:$eq:ACTIVATED"),
            ("search", "USER1"),
            ("filter", "account_locked:$eq:true"),
            ("filter", "account_locked:$eq:false"),
            ("filter", "password_expired:$eq:true"),
            ("filter", "activated:$eq:false"),
            ("filter", "totp_enabled:$eq:true"),
            ("filter", "jobTitle:$eq:Engineer"),
        ] {
            let mut base: Vec<(&str, &str)> = vec![];
            if !sort.is_empty() {
                base.push(("sort", sort));
            }
            if !filter.0.is_empty() {
                base.push(filter);
            }
            let mut all = base.clone();
            all.push(("limit", "100"));
            let whole = db.list_users_page(&q(&all), None).await.unwrap();
            assert!(whole.next.is_none(), "a page that is not full has no next cursor");
            let expected: Vec<String> = whole.users.iter().map(|u| u.id.clone()).collect();
            let mut walked: Vec<String> = vec![];
            let mut cursor: Option<String> = None;
            loop {
                let mut pairs = base.clone();
                pairs.push(("limit", "3"));
                let text = cursor.clone().unwrap_or_default();
                if cursor.is_some() {
                    pairs.push(("cursor", &text));
                }
                let page = db.list_users_page(&q(&pairs), None).await.unwrap();
                assert_eq!(page.total, whole.total, "the count is the whole list's on every page");
                // The same page by skip.
                let skip = walked.len().to_string();
                let mut by_skip = base.clone();
                by_skip.extend([("limit", "3"), ("skip", skip.as_str())]);
                let (_, skipped) = db.list_users(&q(&by_skip)).await.unwrap();
                let ids: Vec<String> = page.users.iter().map(|u| u.id.clone()).collect();
                assert_eq!(ids, skipped.iter().map(|u| u.id.clone()).collect::<Vec<_>>(), "sort {sort:?} {filter:?}");
                walked.extend(ids);
                match page.next {
                    Some(c) => cursor = Some(c.encode()),
                    None => break,
                }
                assert!(walked.len() <= expected.len(), "sort {sort:?} {filter:?}: the walk does not end");
            }
            assert_eq!(walked, expected, "sort {sort:?} filter {filter:?}");
        }
    }
    // A yes/no sort, spelled out: the locked users first, each side by id, both descending.
    let mut locked: Vec<String> = (0..23u32).filter(|n| n % 5 == 0).map(|n| id((n * 7919) % 1000 + 1)).collect();
    let mut open: Vec<String> = (0..23u32).filter(|n| n % 5 != 0).map(|n| id((n * 7919) % 1000 + 1)).collect();
    locked.sort_by(|a, b| b.cmp(a));
    open.sort_by(|a, b| b.cmp(a));
    let (_, page) = db.list_users(&q(&[("sort", "-account_locked"), ("limit", "100")])).await.unwrap();
    assert_eq!(page.iter().map(|u| u.id.clone()).collect::<Vec<_>>(), [locked, open].concat());
    // A sort by a mostly empty column, spelled out: the users without a UID first (by id), then
    // by UID and id; descending, the other way round, the users without one last.
    let uid = |n: u32| (!n.is_multiple_of(4)).then_some(1000 + n % 5);
    let mut asc: Vec<(Option<u32>, String)> = (0..23u32).map(|n| (uid(n), id((n * 7919) % 1000 + 1))).collect();
    asc.sort();
    let asc: Vec<String> = asc.into_iter().map(|(_, i)| i).collect();
    let mut desc: Vec<(Option<u32>, String)> = (0..23u32).map(|n| (uid(n), id((n * 7919) % 1000 + 1))).collect();
    desc.sort_by(|a, b| match (a.0, b.0) {
        (None, None) => b.1.cmp(&a.1),
        (None, Some(_)) => std::cmp::Ordering::Greater,
        (Some(_), None) => std::cmp::Ordering::Less,
        (Some(x), Some(y)) => y.cmp(&x).then(b.1.cmp(&a.1)),
    });
    let desc: Vec<String> = desc.into_iter().map(|(_, i)| i).collect();
    for (sort, want) in [("unix_uid", asc), ("-unix_uid", desc)] {
        let (_, page) = db.list_users(&q(&[("sort", sort), ("limit", "100")])).await.unwrap();
        assert_eq!(page.iter().map(|u| u.id.clone()).collect::<Vec<_>>(), want, "{sort}");
    }
    // Counting stops one past the cap.
    assert_eq!(db.count_users_up_to(&q(&[]), 23).await.unwrap(), Some(23));
    assert_eq!(db.count_users_up_to(&q(&[]), 22).await.unwrap(), None);
    assert_eq!(db.count_users_up_to(&q(&[("filter", "department:$eq:Sales")]), 8).await.unwrap(), Some(8));
}

#[tokio::test]
async fn cursor_paging_sqlite() {
    let dir = tempfile::tempdir().unwrap();
    cursor_paging(Store::connect(&testing::sqlite_url(dir.path())).await.unwrap()).await;
}

#[tokio::test]
async fn cursor_paging_postgres() {
    let Some(url) = testing::fresh_postgres_url("cursor paging on PostgreSQL").await else {
        return;
    };
    cursor_paging(Store::connect(&url).await.unwrap()).await;
}
