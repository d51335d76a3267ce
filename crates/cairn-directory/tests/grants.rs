//! Grants through `Directory`, on SQLite and PostgreSQL: the access decision's `granted`,
//! the events of every change, and associations never outliving their user or group.

use std::sync::Arc;

use cairn_directory::{Ctx, Directory, Error, ManualClock};
use cairn_domain::graph::{GraphOp, ResourceKind, ResourceRef, SubjectKind, SubjectRef};
use cairn_domain::{Actor, CreationSource};
use cairn_store::{testing, EventQuery, Store};
use serde_json::json;

async fn dirs(what: &str) -> Vec<(Directory, Option<tempfile::TempDir>)> {
    let mut out = vec![];
    let tmp = tempfile::tempdir().unwrap();
    let d = Directory::new(
        Store::connect(&testing::sqlite_url(tmp.path())).await.unwrap(),
        Arc::new(ManualClock::default()),
    );
    d.migrate().await.unwrap();
    out.push((d, Some(tmp)));
    if let Some(url) = testing::fresh_postgres_url(what).await {
        let d = Directory::new(Store::connect(&url).await.unwrap(), Arc::new(ManualClock::default()));
        d.migrate().await.unwrap();
        out.push((d, None));
    }
    out
}

fn admin() -> Ctx {
    Ctx::new(Actor::admin("0123456789abcdef01234567", "boss@example.com"), "api", Some("10.0.0.1".into()))
}

async fn user(d: &Directory, name: &str) -> SubjectRef {
    let u = d
        .create_user(
            &admin(),
            &json!({"username": name, "email": format!("{name}@example.com")}),
            CreationSource::ManualEntry,
            "api",
        )
        .await
        .unwrap();
    SubjectRef::new(SubjectKind::User, u.id)
}

async fn group(d: &Directory, name: &str) -> SubjectRef {
    let g = d.create_group(&admin(), &json!({"name": name})).await.unwrap();
    SubjectRef::new(SubjectKind::UserGroup, g.id)
}

async fn ldap(d: &Directory) -> ResourceRef {
    ResourceRef::new(ResourceKind::LdapServer, d.builtin_ldap_server().await.unwrap().id)
}

#[tokio::test]
async fn granted_directly_or_through_a_group_and_not_after_leaving_it() {
    for (d, _tmp) in dirs("grants through Directory on PostgreSQL").await {
        let ldap = ldap(&d).await;
        let (ada, bob) = (user(&d, "ada").await, user(&d, "bob").await);
        let ops = group(&d, "ops").await;
        assert!(!d.granted(&ada.id, &ldap).await.unwrap(), "nothing is granted by default");

        assert!(d.associate(&admin(), &ada, &ldap, GraphOp::Add).await.unwrap());
        assert!(d.granted(&ada.id, &ldap).await.unwrap(), "directly");
        assert!(!d.granted(&bob.id, &ldap).await.unwrap());

        assert!(d.associate(&admin(), &ops, &ldap, GraphOp::Add).await.unwrap());
        assert!(!d.granted(&bob.id, &ldap).await.unwrap(), "not a member yet");
        d.change_membership(&admin(), &ops.id, &bob.id, true).await.unwrap();
        assert!(d.granted(&bob.id, &ldap).await.unwrap(), "through the group");
        d.change_membership(&admin(), &ops.id, &bob.id, false).await.unwrap();
        assert!(!d.granted(&bob.id, &ldap).await.unwrap(), "not after leaving the group");

        // Another resource: another id, or the same id under another type.
        let other = ResourceRef::new(ResourceKind::LdapServer, "0123456789abcdef01234567");
        assert!(!d.granted(&ada.id, &other).await.unwrap());
        assert!(!d.granted(&ada.id, &ResourceRef::new(ResourceKind::RadiusServer, ldap.id.clone())).await.unwrap());
        assert!(!d.granted("not-an-id", &ldap).await.unwrap(), "an unknown user is granted nothing");

        assert!(d.associate(&admin(), &ada, &ldap, GraphOp::Remove).await.unwrap());
        assert!(!d.granted(&ada.id, &ldap).await.unwrap(), "not after removal");
    }
}

#[tokio::test]
async fn each_change_writes_one_event_and_repeats_write_none() {
    for (d, _tmp) in dirs("grant events on PostgreSQL").await {
        let ldap = ldap(&d).await;
        let ada = user(&d, "ada").await;
        let ops = group(&d, "ops").await;
        assert!(d.associate(&admin(), &ada, &ldap, GraphOp::Add).await.unwrap());
        assert!(!d.associate(&admin(), &ada, &ldap, GraphOp::Add).await.unwrap(), "already there");
        assert!(d.associate(&admin(), &ops, &ldap, GraphOp::Add).await.unwrap());
        assert!(d.associate(&admin(), &ada, &ldap, GraphOp::Remove).await.unwrap());
        assert!(!d.associate(&admin(), &ada, &ldap, GraphOp::Remove).await.unwrap(), "already gone");

        let events = |target: &str, action: &str| {
            let q = EventQuery {
                target_id: Some(target.into()),
                action: Some(action.into()),
                limit: 100,
                ..Default::default()
            };
            let d = d.clone();
            async move { d.list_events(&q).await.unwrap().1 }
        };
        let adds = events(&ada.id, "association_add").await;
        assert_eq!(adds.len(), 1);
        assert_eq!(adds[0].target_kind.as_deref(), Some("user"));
        assert_eq!(adds[0].target_name.as_deref(), Some("ada"));
        assert_eq!(adds[0].actor, admin().actor);
        assert_eq!(adds[0].client_addr.as_deref(), Some("10.0.0.1"));
        assert_eq!(
            adds[0].detail,
            json!({"resource_type": "ldap_server", "resource_id": ldap.id, "resource_name": "Cairn LDAP"})
        );
        assert_eq!(events(&ada.id, "association_remove").await.len(), 1);
        let group_adds = events(&ops.id, "association_add").await;
        assert_eq!((group_adds.len(), group_adds[0].target_kind.as_deref()), (1, Some("group")));
    }
}

#[tokio::test]
async fn both_ends_must_exist() {
    for (d, _tmp) in dirs("grant lookups on PostgreSQL").await {
        let ldap = ldap(&d).await;
        let ada = user(&d, "ada").await;
        let missing = "0123456789abcdef01234567";
        for (s, r) in [
            (SubjectRef::new(SubjectKind::User, missing), ldap.clone()),
            (SubjectRef::new(SubjectKind::UserGroup, missing), ldap.clone()),
            (SubjectRef::new(SubjectKind::User, "nul\0"), ldap.clone()),
            (ada.clone(), ResourceRef::new(ResourceKind::LdapServer, missing)),
            (ada.clone(), ResourceRef::new(ResourceKind::RadiusServer, missing)),
            (ada.clone(), ResourceRef::new(ResourceKind::Application, missing)),
        ] {
            for op in [GraphOp::Add, GraphOp::Remove] {
                match d.associate(&admin(), &s, &r, op).await {
                    Err(Error::NotFound(_)) => {}
                    other => panic!("{s:?} {r:?} {op:?}: {other:?}"),
                }
            }
        }
        match d.associate(&admin(), &ada, &ResourceRef::new(ResourceKind::Application, missing), GraphOp::Add).await {
            Err(Error::NotFound(m)) => assert!(m.contains("no application with id"), "{m}"),
            other => panic!("{other:?}"),
        }
        assert!(matches!(
            d.associations_of_subject(
                &SubjectRef::new(SubjectKind::UserGroup, missing),
                &[ResourceKind::LdapServer],
                10,
                0
            )
            .await,
            Err(Error::NotFound(_))
        ));
        assert!(matches!(
            d.associations_of_resource(
                &ResourceRef::new(ResourceKind::Application, missing),
                &[SubjectKind::User],
                10,
                0
            )
            .await,
            Err(Error::NotFound(_))
        ));
        let (n, _) =
            d.associations_of_resource(&ldap, &[SubjectKind::User, SubjectKind::UserGroup], 10, 0).await.unwrap();
        assert_eq!(n, 0, "nothing half-applied");
    }
}

#[tokio::test]
async fn the_ldap_server_is_created_once() {
    for (d, _tmp) in dirs("the built-in LDAP server on PostgreSQL").await {
        let first = d.builtin_ldap_server().await.unwrap();
        assert!(cairn_domain::id::is_object_id(&first.id));
        d.migrate().await.unwrap();
        let (n, servers) = d.ldap_servers(10, 0).await.unwrap();
        assert_eq!((n, servers), (1, vec![first.clone()]), "migrating again keeps the one server and its id");
        assert_eq!(d.ldap_server(&first.id).await.unwrap(), first);
    }
}

/// Processes started together against one PostgreSQL (§14) create one organization and one
/// LDAP server between them.
#[tokio::test]
async fn processes_migrating_at_once_create_one_ldap_server() {
    let Some(url) = testing::fresh_postgres_url("concurrent migrate on PostgreSQL").await else {
        return;
    };
    // The schema first, so that the processes' setups overlap rather than queue behind
    // the migrations' own lock.
    Store::connect(&url).await.unwrap().migrate().await.unwrap();
    let mut starts = vec![];
    for _ in 0..8 {
        let url = url.clone();
        starts.push(tokio::spawn(async move {
            let d = Directory::new(Store::connect(&url).await.unwrap(), Arc::new(ManualClock::default()));
            d.migrate().await.unwrap();
            d
        }));
    }
    let mut dirs = vec![];
    for s in starts {
        dirs.push(s.await.unwrap());
    }
    assert_eq!(dirs[0].ldap_servers(10, 0).await.unwrap().0, 1);
    let org = dirs[0].organization().await.unwrap().id;
    for d in &dirs {
        assert_eq!(d.organization().await.unwrap().id, org);
    }
}

/// An association added while its user or group is deleted goes with it (PostgreSQL, where
/// the two transactions really run at once).
#[tokio::test]
async fn no_association_outlives_its_subject() {
    let Some(url) = testing::fresh_postgres_url("grants racing deletions on PostgreSQL").await else {
        return;
    };
    let d = Directory::new(Store::connect(&url).await.unwrap(), Arc::new(ManualClock::default()));
    d.migrate().await.unwrap();
    let ldap = ldap(&d).await;
    for i in 0..40 {
        let subject = if i % 2 == 0 { user(&d, &format!("u{i}")).await } else { group(&d, &format!("g{i}")).await };
        let (d1, d2) = (d.clone(), d.clone());
        let (s1, s2, r1) = (subject.clone(), subject.clone(), ldap.clone());
        let add = tokio::spawn(async move { d1.associate(&admin(), &s1, &r1, GraphOp::Add).await });
        let delete = tokio::spawn(async move {
            match s2.kind {
                SubjectKind::User => d2.delete_user(&admin(), &s2.id).await.map(|_| ()),
                SubjectKind::UserGroup => d2.delete_group(&admin(), &s2.id).await.map(|_| ()),
            }
        });
        match add.await.unwrap() {
            Ok(_) | Err(Error::NotFound(_)) => {}
            Err(e) => panic!("{e:?}"),
        }
        delete.await.unwrap().unwrap();
        let (n, left) =
            d.associations_of_resource(&ldap, &[SubjectKind::User, SubjectKind::UserGroup], 10, 0).await.unwrap();
        assert_eq!(n, 0, "trial {i}: {left:?} outlived its deletion");
    }
}
