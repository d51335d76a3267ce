//! The outbox keeps a new message's template parameters, not its composed bodies, and renders
//! it identically when it is read; messages stored composed by earlier versions read as stored.

use std::sync::Arc;

use cairn_directory::{Ctx, Directory, ManualClock};
use cairn_domain::mail::{compose, MailKind};
use cairn_domain::{Actor, OutboxMessage};
use cairn_store::{testing, OutboxQuery, Store};
use serde_json::json;

fn admin() -> Ctx {
    Ctx::new(Actor::admin("0123456789abcdef01234567", "boss@example.com"), "api", Some("10.0.0.1".into()))
}

#[tokio::test]
async fn new_messages_keep_their_parameters_and_render_when_read() {
    let tmp = tempfile::tempdir().unwrap();
    let store = Store::connect(&testing::sqlite_url(tmp.path())).await.unwrap();
    let d = Directory::new(store.clone(), Arc::new(ManualClock::default()));
    d.migrate().await.unwrap();
    let u = d
        .create_user(
            &admin(),
            &json!({"username": "Ada", "email": "ada@example.com", "firstname": "Ada", "lastname": "<Lovelace>", "state": "ACTIVATED"}),
            cairn_domain::CreationSource::ManualEntry,
            "api",
        )
        .await
        .unwrap();
    let q = OutboxQuery { limit: 10, ..Default::default() };
    // As stored: parameters only.
    let (_, raw) = store.read().await.unwrap().db().list_messages(&q).await.unwrap();
    assert_eq!(raw.len(), 1);
    let p = raw[0].params.clone().expect("parameters stored");
    assert_eq!((raw[0].subject.as_str(), raw[0].text.as_str(), raw[0].html.as_str()), ("", "", ""));
    assert_eq!((p.username.as_str(), p.name.as_str()), ("Ada", "Ada <Lovelace>"));
    assert!(p.link.contains("/portal/activate?token=") && p.valid_for == "7 days", "{p:?}");
    assert!(serde_json::to_string(&p).unwrap().len() < 250, "a few hundred bytes at most");
    // As read: rendered, exactly as composed from the user.
    let (_, read) = d.list_messages(&q).await.unwrap();
    let want = compose(MailKind::Activation, &p.org, &u, &p.link, "7 days");
    assert_eq!((&read[0].subject, &read[0].text, &read[0].html), (&want.subject, &want.text, &want.html));
    assert!(read[0].html.contains("Ada &lt;Lovelace&gt;"));

    // A message an earlier version stored composed reads back as it was.
    let mut old: OutboxMessage = raw[0].clone();
    old.id = "0123456789abcdef0123456f".into();
    (old.subject, old.text, old.html, old.params) = ("Old".into(), "old text".into(), "<p>old</p>".into(), None);
    let mut tx = store.begin().await.unwrap();
    tx.db().insert_message(&old).await.unwrap();
    tx.commit().await.unwrap();
    let (_, read) = d.list_messages(&q).await.unwrap();
    let o = read.iter().find(|m| m.id == old.id).unwrap();
    assert_eq!((o.subject.as_str(), o.text.as_str(), o.html.as_str()), ("Old", "old text", "<p>old</p>"));
}
