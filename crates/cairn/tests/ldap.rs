//! LDAP end to end (§10, issue 15): the real binary on both databases, driven by the `ldap3`
//! crate and by OpenLDAP's own clients (`ldapsearch`, `ldapwhoami`, `ldappasswd`,
//! `ldapcompare`): who is in the tree, who may bind and read what, and that a change through
//! the API shows in the next LDAP operation.

mod common;

use std::process::Command;

use common::{Db, Server};
use ldap3::controls::PagedResults;
use ldap3::{LdapConn, LdapResult, Scope, SearchEntry};
use serde_json::{json, Value};

const PW: &str = "lantern orchard seventeen";
const BASE: &str = "dc=cairn,dc=local";

struct Ldap {
    s: Server,
    port: u16,
    ldaps: u16,
}

fn start(db: &Db) -> Ldap {
    let (port, ldaps) = (common::free_port(), common::free_port());
    let s = Server::start_with(
        db,
        &[
            ("CAIRN_BOOTSTRAP_API_KEY", common::KEY),
            ("CAIRN_LDAP_ADDR", &format!("127.0.0.1:{port}")),
            ("CAIRN_LDAPS_ADDR", &format!("127.0.0.1:{ldaps}")),
        ],
    );
    Ldap { s, port, ldaps }
}

impl Ldap {
    fn url(&self) -> String {
        format!("ldap://127.0.0.1:{}", self.port)
    }
    fn conn(&self) -> LdapConn {
        LdapConn::new(&self.url()).expect("connect")
    }
    fn bind(&self, uid: &str, pw: &str) -> (LdapConn, LdapResult) {
        let mut c = self.conn();
        let r = c.simple_bind(&dn(uid), pw).expect("bind answered");
        (c, r)
    }
    fn cert(&self) -> std::path::PathBuf {
        self.s.data_dir().join("ldap-cert.pem")
    }
}

fn dn(uid: &str) -> String {
    format!("uid={uid},ou=Users,{BASE}")
}

fn create(s: &Server, body: Value) -> String {
    let (st, v) = s.post("/api/systemusers", body);
    assert_eq!(st, 200, "{v}");
    v["_id"].as_str().unwrap().to_string()
}

fn user(s: &Server, name: &str, extra: Value) -> String {
    let mut b = json!({"username": name, "email": format!("{name}@example.com"), "password": PW,
        "firstname": "F", "lastname": name.to_uppercase()});
    for (k, v) in extra.as_object().unwrap() {
        b[k] = v.clone();
    }
    create(s, b)
}

fn ldap_server(s: &Server) -> String {
    let (st, v) = s.get("/api/v2/ldapservers");
    assert_eq!(st, 200, "{v}");
    v[0]["id"].as_str().unwrap().to_string()
}

fn associate(s: &Server, kind: &str, id: &str) {
    let lid = ldap_server(s);
    let (st, v) =
        s.post(&format!("/api/v2/ldapservers/{lid}/associations"), json!({"op": "add", "type": kind, "id": id}));
    assert!(st == 204 || st == 200, "{st} {v}");
}

fn group(s: &Server, name: &str, members: &[&str], gid: Option<i64>) -> String {
    let mut b = json!({"name": name});
    if let Some(g) = gid {
        b["attributes"] = json!({"posixGroups": [{"id": g, "name": name}]});
    }
    let (st, v) = s.post("/api/v2/usergroups", b);
    assert!(st == 201 || st == 200, "{v}");
    let gid = v["id"].as_str().unwrap().to_string();
    for m in members {
        let (st, v) =
            s.post(&format!("/api/v2/usergroups/{gid}/members"), json!({"op": "add", "type": "user", "id": m}));
        assert!(st == 204 || st == 200, "{st} {v}");
    }
    gid
}

fn search(c: &mut LdapConn, base: &str, scope: Scope, filter: &str, attrs: &[&str]) -> (Vec<SearchEntry>, u32) {
    match c.search(base, scope, filter, attrs.to_vec()) {
        Ok(ldap3::SearchResult(entries, res)) => (entries.into_iter().map(SearchEntry::construct).collect(), res.rc),
        Err(e) => panic!("search failed: {e}"),
    }
}

fn uids(entries: &[SearchEntry]) -> Vec<String> {
    let mut v: Vec<String> = entries.iter().filter_map(|e| e.attrs.get("uid").map(|u| u[0].clone())).collect();
    v.sort();
    v
}

/// The lifecycle and the grants decide who is in the tree and who binds; a change through
/// the API shows in the next operation, and a bind ends when its account changes.
#[test]
fn the_tree_follows_the_lifecycle_and_the_grants() {
    for db in Db::all("ldap_lifecycle") {
        let l = start(&db);
        let s = &l.s;
        let alice = user(
            s,
            "Alice",
            json!({"department": "R&D", "jobTitle": "Engineer",
            "unix_uid": 5001, "unix_guid": 5001,
            "ssh_keys": [{"name": "laptop", "public_key": "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIB3 alice@laptop"}],
            "phoneNumbers": [{"type": "work", "number": "+1 555 0100"}, {"type": "mobile", "number": "+1 555 0199"}]}),
        );
        let svc = user(s, "svc-ldap", json!({"ldap_binding_user": true}));
        let _staged = user(s, "bob", json!({"state": "STAGED"}));
        let _outsider = user(s, "charlie", json!({}));
        let dave = user(s, "dave", json!({}));
        let ops = group(s, "ops", &[&alice, &dave], Some(7000));
        associate(s, "user_group", &ops);
        associate(s, "user", &svc);

        // Anonymous: the RootDSE and the subschema, nothing else.
        let mut anon = l.conn();
        let (e, rc) = search(&mut anon, "", Scope::Base, "(objectClass=*)", &["namingContexts", "supportedExtension"]);
        assert_eq!(rc, 0);
        assert_eq!(e[0].attrs["namingContexts"], vec![BASE.to_string()]);
        assert!(e[0].attrs["supportedExtension"].contains(&"1.3.6.1.4.1.1466.20037".to_string()));
        let (e, rc) =
            search(&mut anon, "cn=subschema", Scope::Base, "(objectClass=*)", &["attributeTypes", "objectClasses"]);
        assert_eq!(rc, 0);
        assert!(e[0].attrs["objectClasses"].iter().any(|c| c.contains("'inetOrgPerson'")));
        assert!(e[0].attrs["attributeTypes"].iter().any(|c| c.contains("'uidNumber'")));
        let (_, rc) = search(&mut anon, BASE, Scope::Subtree, "(uid=*)", &[]);
        assert_eq!(rc, 50, "anonymous clients read no entries");

        // A DN with an empty password is an unauthenticated bind (RFC 4513 §5.1.2).
        let r = l.conn().simple_bind(&dn("Alice"), "").unwrap();
        assert_eq!(r.rc, 53, "{r:?}");

        // Binds: an associated active user (its DN in any case), not the others.
        let (_, r) = l.bind("alice", PW);
        assert_eq!(r.rc, 0, "{r:?}");
        for (who, pw) in [("Alice", "wrong password"), ("bob", PW), ("charlie", PW), ("nobody", PW)] {
            let (_, r) = l.bind(who, pw);
            assert_eq!(r.rc, 49, "{who}: {r:?}");
            assert_eq!(r.text, "invalid credentials", "{who}: the same answer whatever the reason");
        }

        // The service account reads the tree: staged and unassociated users are absent.
        let (mut sc, r) = l.bind("svc-ldap", PW);
        assert_eq!(r.rc, 0);
        let (e, rc) = search(&mut sc, BASE, Scope::Subtree, "(objectClass=inetOrgPerson)", &["uid"]);
        assert_eq!(rc, 0);
        assert_eq!(uids(&e), ["Alice", "dave", "svc-ldap"]);
        let (e, _) = search(&mut sc, BASE, Scope::Subtree, "(uid=alice)", &["*", "+"]);
        assert_eq!(e.len(), 1);
        let a = &e[0].attrs;
        assert_eq!(e[0].dn, dn("Alice"), "the username's case is kept");
        assert_eq!(a["mail"], ["alice@example.com"]);
        assert_eq!(a["cn"], ["F ALICE"]);
        assert_eq!(a["ou"], ["R&D"]);
        assert_eq!(a["title"], ["Engineer"]);
        assert_eq!(a["uidNumber"], ["5001"]);
        assert_eq!(a["homeDirectory"], ["/home/Alice"]);
        assert_eq!(a["telephoneNumber"], ["+1 555 0100"]);
        assert_eq!(a["mobile"], ["+1 555 0199"]);
        assert!(a["sshPublicKey"][0].starts_with("ssh-ed25519 "));
        assert!(a["objectClass"].contains(&"posixAccount".to_string()));
        assert_eq!(a["memberOf"], [format!("cn=ops,ou=Groups,{BASE}")]);
        assert!(a.contains_key("entryUUID") && a.contains_key("createTimestamp"));
        assert!(!a.contains_key("nsAccountLock"));
        let (e, _) = search(
            &mut sc,
            &format!("ou=Groups,{BASE}"),
            Scope::OneLevel,
            "(cn=ops)",
            &["member", "memberUid", "gidNumber"],
        );
        assert_eq!(e.len(), 1, "{e:?}");
        assert_eq!(e[0].attrs["member"].len(), 2);

        // A plain user reads its own entry only.
        let (mut ac, _) = l.bind("alice", PW);
        let (e, rc) = search(&mut ac, BASE, Scope::Subtree, "(objectClass=*)", &["uid"]);
        assert_eq!((rc, uids(&e)), (0, vec!["Alice".to_string()]));
        let who = ac.extended(ldap3::exop::WhoAmI).unwrap().0;
        let who: ldap3::exop::WhoAmIResp = who.parse();
        assert_eq!(who.authzid, format!("dn:{}", dn("Alice")));

        // Suspension: visible at once, binds refused, an open bind ends.
        let (st, v) = s.post(&format!("/api/systemusers/{dave}/state/suspend"), json!({}));
        assert_eq!(st, 200, "{v}");
        let (e, _) = search(&mut sc, BASE, Scope::Subtree, "(uid=dave)", &["nsAccountLock"]);
        assert_eq!(e[0].attrs["nsAccountLock"], ["TRUE"], "suspended users stay visible, locked");
        assert_eq!(l.bind("dave", PW).1.rc, 49);
        let (st, _) = s.post(&format!("/api/systemusers/{alice}/state/suspend"), json!({}));
        assert_eq!(st, 200);
        let (_, rc) = search(&mut ac, BASE, Scope::Subtree, "(uid=alice)", &[]);
        assert_eq!(rc, 50, "the bind of a suspended user ends with the suspension");

        // Removing the grant removes the entry at the next operation.
        let lid = ldap_server(s);
        let (st, _) = s.post(
            &format!("/api/v2/ldapservers/{lid}/associations"),
            json!({"op": "remove", "type": "user_group", "id": ops}),
        );
        assert!(st == 204 || st == 200);
        let (e, _) = search(&mut sc, BASE, Scope::Subtree, "(objectClass=person)", &["uid"]);
        assert_eq!(uids(&e), ["svc-ldap"]);

        // Every bind attempt is an event with the protocol and the address.
        let (_, v) = s.get("/api/v2/events?action=login_failure&limit=100");
        let list = v.as_array().cloned().unwrap_or_else(|| v["results"].as_array().cloned().unwrap_or_default());
        assert!(list.iter().any(|e| e["detail"]["protocol"] == "ldap" && e["client_addr"] == "127.0.0.1"), "{v}");
    }
}

/// The tree holds only the users the LDAP server reaches, so every way of coming into reach or
/// leaving it is applied to a loaded tree: a direct grant, a group's grant, joining or leaving
/// a granted group, activation, a group's deletion; and a full load (a restart) shows the same.
#[test]
fn the_tree_follows_who_the_ldap_server_reaches() {
    for db in Db::all("ldap_reach") {
        let mut l = start(&db);
        let s = &l.s;
        let svc = user(s, "svc-reach", json!({"ldap_binding_user": true}));
        let erin = user(s, "erin", json!({}));
        let fred = user(s, "fred", json!({}));
        let gail = user(s, "gail", json!({"state": "STAGED"}));
        let hank = user(s, "hank", json!({}));
        associate(s, "user", &svc);
        let (mut sc, r) = l.bind("svc-reach", PW);
        assert_eq!(r.rc, 0);
        let people = |c: &mut LdapConn| uids(&search(c, BASE, Scope::Subtree, "(objectClass=person)", &["uid"]).0);
        // What the tree holds in memory, not only what it shows: the users no grant reaches
        // are not kept.
        let held = |s: &Server, kind: &str| {
            let text = s.raw().get(format!("{}/metrics", s.base)).send().unwrap().text().unwrap();
            let line = format!("cairn_ldap_tree_held{{kind=\"{kind}\"}} ");
            text.lines().find_map(|l| l.strip_prefix(&line)?.parse::<f64>().ok()).unwrap_or(-1.0)
        };
        assert_eq!(people(&mut sc), ["svc-reach"], "the tree is loaded and holds no one else");
        assert_eq!((held(s, "user"), held(s, "group")), (1.0, 0.0));

        // A direct grant, then a granted group, then joining it.
        associate(s, "user", &erin);
        assert_eq!(people(&mut sc), ["erin", "svc-reach"]);
        let crew = group(s, "crew", &[&fred, &gail], None);
        let other = group(s, "other", &[&hank], None);
        assert_eq!(people(&mut sc), ["erin", "svc-reach"], "groups not granted bring no one");
        associate(s, "user_group", &crew);
        assert_eq!(people(&mut sc), ["erin", "fred", "svc-reach"], "staged members stay out");
        let (st, v) =
            s.post(&format!("/api/v2/usergroups/{crew}/members"), json!({"op": "add", "type": "user", "id": hank}));
        assert!(st == 204 || st == 200, "{st} {v}");
        assert_eq!(people(&mut sc), ["erin", "fred", "hank", "svc-reach"]);
        assert_eq!((held(s, "user"), held(s, "group")), (4.0, 1.0), "the group not granted is not held");
        let (e, _) = search(&mut sc, BASE, Scope::Subtree, "(cn=crew)", &["member"]);
        assert_eq!(e[0].attrs["member"].len(), 2, "{e:?}");
        assert_eq!(l.bind("hank", PW).1.rc, 0, "a member who joined binds");

        // Activation brings a staged member in.
        let (st, v) = s.post(&format!("/api/systemusers/{gail}/state/activate"), json!({}));
        assert_eq!(st, 200, "{v}");
        assert_eq!(people(&mut sc), ["erin", "fred", "gail", "hank", "svc-reach"]);

        // Leaving: a non-granted group changes nothing; leaving the granted one takes hank out.
        let (st, _) =
            s.post(&format!("/api/v2/usergroups/{other}/members"), json!({"op": "remove", "type": "user", "id": hank}));
        assert!(st == 204 || st == 200);
        assert_eq!(people(&mut sc), ["erin", "fred", "gail", "hank", "svc-reach"]);
        let (st, _) =
            s.post(&format!("/api/v2/usergroups/{crew}/members"), json!({"op": "remove", "type": "user", "id": hank}));
        assert!(st == 204 || st == 200);
        assert_eq!(people(&mut sc), ["erin", "fred", "gail", "svc-reach"]);
        assert_eq!(held(s, "user"), 4.0, "a member who left is no longer held");
        assert_eq!(l.bind("hank", PW).1.rc, 49, "a member who left binds no more");

        // Reached twice (directly and through the group): losing one keeps the user.
        let (st, _) =
            s.post(&format!("/api/v2/usergroups/{crew}/members"), json!({"op": "add", "type": "user", "id": erin}));
        assert!(st == 204 || st == 200);
        let lid = ldap_server(s);
        let (st, _) = s.post(
            &format!("/api/v2/ldapservers/{lid}/associations"),
            json!({"op": "remove", "type": "user", "id": erin}),
        );
        assert!(st == 204 || st == 200);
        assert_eq!(people(&mut sc), ["erin", "fred", "gail", "svc-reach"]);

        // A full load shows the same tree.
        l.s.restart();
        let (mut sc, r) = l.bind("svc-reach", PW);
        assert_eq!(r.rc, 0);
        assert_eq!(people(&mut sc), ["erin", "fred", "gail", "svc-reach"]);
        assert_eq!((held(&l.s, "user"), held(&l.s, "group")), (4.0, 1.0));

        // Deleting the granted group takes its members out.
        let (st, v) = l.s.delete(&format!("/api/v2/usergroups/{crew}"));
        assert!(st == 204 || st == 200, "{st} {v}");
        assert_eq!(people(&mut sc), ["svc-reach"]);
        assert_eq!((held(&l.s, "user"), held(&l.s, "group")), (1.0, 0.0));
        let (e, _) = search(&mut sc, BASE, Scope::Subtree, "(objectClass=groupOfNames)", &["cn"]);
        assert!(e.is_empty(), "{e:?}");
    }
}

/// An expired password fails with a diagnostic for the right password's owner; failed binds
/// count toward the lockout the portal shares.
#[test]
fn expired_passwords_and_lockout() {
    for db in Db::all("ldap_expiry_lockout") {
        let l = start(&db);
        let s = &l.s;
        let (st, _) = s.put("/api/organizations", json!({"settings": {"passwordPolicy": {"maxLoginAttempts": 3}}}));
        assert_eq!(st, 200);
        let erin = user(s, "erin", json!({}));
        let fred = user(s, "fred", json!({}));
        associate(s, "user", &erin);
        associate(s, "user", &fred);
        let (st, _) = s.post(&format!("/api/systemusers/{erin}/expire"), json!({}));
        assert_eq!(st, 200);
        let (_, r) = l.bind("erin", PW);
        assert_eq!(r.rc, 49);
        assert!(r.text.contains("expired"), "{r:?}");
        let (_, r) = l.bind("erin", "not the password");
        assert_eq!(r.text, "invalid credentials", "a wrong password learns nothing");

        for _ in 0..3 {
            assert_eq!(l.bind("fred", "wrong").1.rc, 49);
        }
        let (_, u) = s.get(&format!("/api/systemusers/{fred}"));
        assert_eq!(u["account_locked"], true, "{u}");
        assert_eq!(l.bind("fred", PW).1.rc, 49, "locked: the right password is refused too");

        // The server's actions: `disable` keeps the entries (the default), `remove` hides them.
        let svc = user(s, "reader", json!({"ldap_binding_user": true}));
        associate(s, "user", &svc);
        let (mut rc, _) = l.bind("reader", PW);
        let present = |c: &mut LdapConn| uids(&search(c, BASE, Scope::Subtree, "(objectClass=person)", &["uid"]).0);
        assert_eq!(present(&mut rc), ["erin", "fred", "reader"]);
        let lid = ldap_server(s);
        let (st, v) = s.req(
            "PATCH",
            &format!("/api/v2/ldapservers/{lid}"),
            Some(common::KEY),
            Some(&json!({"userLockoutAction": "remove", "userPasswordExpirationAction": "remove"})),
        );
        assert_eq!(st, 200, "{v}");
        assert_eq!(v["userLockoutAction"], "remove");
        assert_eq!(present(&mut rc), ["reader"], "locked and expired users leave the tree at once");
        let (st, v) = s.req(
            "PUT",
            &format!("/api/v2/ldapservers/{lid}"),
            Some(common::KEY),
            Some(&json!({"userLockoutAction": "disable"})),
        );
        assert_eq!(st, 200, "{v}");
        assert_eq!(present(&mut rc), ["fred", "reader"]);
        for bad in [
            json!({"userLockoutAction": "delete"}),
            json!({"colour": "blue"}),
            json!({"id": "0123456789abcdef01234567"}),
            json!([1]),
        ] {
            let (st, v) = s.req("PATCH", &format!("/api/v2/ldapservers/{lid}"), Some(common::KEY), Some(&bad));
            assert_eq!(st, 400, "{bad}: {v}");
        }
        let (st, _) = s.req(
            "PATCH",
            "/api/v2/ldapservers/0123456789abcdef01234567",
            Some(common::KEY),
            Some(&json!({"name": "x"})),
        );
        assert_eq!(st, 404);
        let (_, v) = s.get("/api/v2/events?action=ldapserver_update&limit=10");
        let list = v.as_array().cloned().unwrap_or_else(|| v["results"].as_array().cloned().unwrap_or_default());
        assert_eq!(list.len(), 2, "one event per change: {v}");

        let (st, _) = s.post(&format!("/api/systemusers/{fred}/unlock"), json!({}));
        assert_eq!(st, 200);
        assert_eq!(l.bind("fred", PW).1.rc, 0);
    }
}

/// Every filter type, scopes, attribute selection, typesOnly, size limits and paged results
/// over 2,500 users; a cookie from another connection is refused.
#[test]
fn searches_filter_page_and_limit() {
    for db in Db::all("ldap_search") {
        let l = start(&db);
        let s = &l.s;
        // One group holds them all (the CSV's group column), and the group is granted.
        let everyone = group(s, "everyone", &[], None);
        associate(s, "user_group", &everyone);
        let mut csv = String::from("Username,Email,FirstName,LastName,department,everyone\n");
        for i in 0..2500 {
            csv.push_str(&format!("u{i:04},u{i:04}@example.com,First{i},Last{i:04},Dept{},true\n", i % 5));
        }
        let r = s
            .raw()
            .post(format!("{}/api/v2/users/import", s.base))
            .header("x-api-key", common::KEY)
            .header("content-type", "text/csv")
            .body(csv)
            .send()
            .unwrap();
        assert_eq!(r.status(), 202);
        let job: Value = r.json().unwrap();
        let job = job["jobId"].as_str().unwrap().to_string();
        let mut status = Value::Null;
        for _ in 0..600 {
            status = s.get(&format!("/api/v2/users/import/{job}")).1;
            if status["status"] == "done" {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
        assert_eq!(status["counts"]["created"], 2500, "{status}");
        let svc = user(s, "reader", json!({"ldap_binding_user": true}));
        associate(s, "user", &svc);
        let (mut c, r) = l.bind("reader", PW);
        assert_eq!(r.rc, 0);

        let count = |c: &mut LdapConn, f: &str| {
            let (e, rc) = search(c, &format!("ou=Users,{BASE}"), Scope::OneLevel, f, &["1.1"]);
            assert!(rc == 0 || rc == 4, "{f}: rc {rc}");
            e.len()
        };
        assert_eq!(count(&mut c, "(uid=u0042)"), 1);
        assert_eq!(count(&mut c, "(UID=U0042)"), 1, "attribute names and values ignore case");
        assert_eq!(count(&mut c, "(&(objectClass=inetOrgPerson)(mail=u0042@example.com))"), 1);
        assert_eq!(count(&mut c, "(|(uid=u0001)(uid=u0002)(uid=nobody))"), 2);
        assert_eq!(count(&mut c, "(&(uid=u00*)(!(uid=u000*)))"), 90);
        assert_eq!(count(&mut c, "(uid=u*9*9)"), 43, "the final part does not overlap the middle");
        assert_eq!(count(&mut c, "(&(uid=u24*)(uid>=u2450))"), 50);
        assert_eq!(count(&mut c, "(&(uid=u00*)(uid<=u0009))"), 10);
        assert_eq!(count(&mut c, "(&(ou=Dept1)(sn~=last0011))"), 1);
        assert_eq!(count(&mut c, "(&(uid=u000*)(description=*))"), 0);
        assert_eq!(count(&mut c, "(nosuchattribute=x)"), 0, "an unknown attribute matches nothing");
        assert_eq!(count(&mut c, "(!(nosuchattribute=x))"), 0, "and its negation is still undefined");
        assert_eq!(count(&mut c, "(cn:caseExactMatch:=x)"), 0);

        // Size limit: the server's 1,000, then sizeLimitExceeded.
        let (e, rc) = search(&mut c, BASE, Scope::Subtree, "(uid=u*)", &["uid"]);
        assert_eq!((e.len(), rc), (1000, 4));
        // Attribute selection and typesOnly.
        let r = c.search(&dn("u0007"), Scope::Base, "(objectClass=*)", vec!["mail"]).unwrap();
        let (e, _) = r.success().unwrap();
        let e = SearchEntry::construct(e[0].clone());
        assert_eq!(e.attrs.keys().collect::<Vec<_>>(), ["mail"]);
        assert_eq!(e.attrs["mail"], ["u0007@example.com"]);
        let r = c
            .with_search_options(ldap3::SearchOptions::new().typesonly(true))
            .search(&dn("u0007"), Scope::Base, "(objectClass=*)", vec!["mail"])
            .unwrap();
        let (e, _) = r.success().unwrap();
        assert_eq!(SearchEntry::construct(e[0].clone()).attrs["mail"], Vec::<String>::new());

        // Paged over everything: 2,500 users, each once.
        let mut seen = Vec::new();
        let mut cookie = Vec::new();
        let mut pages = 0;
        loop {
            let ctrl = PagedResults { size: 300, cookie: cookie.clone() };
            let r = c
                .with_controls(ctrl)
                .search(&format!("ou=Users,{BASE}"), Scope::OneLevel, "(uid=u*)", vec!["uid"])
                .unwrap();
            let (entries, res) = r.success().unwrap();
            pages += 1;
            seen.extend(entries.into_iter().map(|e| SearchEntry::construct(e).attrs["uid"][0].clone()));
            let raw = res.ctrls.iter().find(|c| matches!(c.0, Some(ldap3::controls::ControlType::PagedResults)));
            let Some(raw) = raw else { break };
            let p: PagedResults = raw.1.parse();
            if p.cookie.is_empty() {
                break;
            }
            cookie = p.cookie;
            assert!(pages < 20);
        }
        seen.sort();
        seen.dedup();
        assert_eq!(seen.len(), 2500);
        assert_eq!(pages, 9);

        // A cookie from another connection is refused.
        let ctrl = PagedResults { size: 10, cookie: vec![] };
        let r = c.with_controls(ctrl).search(BASE, Scope::Subtree, "(uid=u*)", vec!["uid"]).unwrap();
        let raw = r.1.ctrls.iter().find(|c| matches!(c.0, Some(ldap3::controls::ControlType::PagedResults))).unwrap();
        let p: PagedResults = raw.1.parse();
        let (mut other, _) = l.bind("reader", PW);
        let ctrl = PagedResults { size: 10, cookie: p.cookie };
        let r = other.with_controls(ctrl).search(BASE, Scope::Subtree, "(uid=u*)", vec!["uid"]).unwrap();
        assert_eq!(r.1.rc, 53, "{:?}", r.1);
        let ctrl = PagedResults { size: 10, cookie: b"forged".to_vec() };
        let r = c.with_controls(ctrl).search(BASE, Scope::Subtree, "(uid=u*)", vec!["uid"]).unwrap();
        assert_eq!(r.1.rc, 53);

        // Compare.
        let r = c.compare(&dn("u0003"), "mail", "U0003@example.com").unwrap();
        assert_eq!(r.0.rc, 6, "compareTrue");
        let r = c.compare(&dn("u0003"), "mail", "x@example.com").unwrap();
        assert_eq!(r.0.rc, 5, "compareFalse");
        // Writes are refused with a reason.
        let r = c.delete(&dn("u0003")).unwrap();
        assert_eq!(r.rc, 53);
        assert!(r.text.contains("read-only"), "{r:?}");
    }
}

fn tool(cmd: &str, args: &[&str], env: &[(&str, &str)]) -> (i32, String, String) {
    let mut c = Command::new(cmd);
    c.args(args).env("LDAPTLS_REQCERT", "demand");
    for (k, v) in env {
        c.env(k, v);
    }
    let out = c.output().unwrap_or_else(|e| panic!("{cmd} cannot run ({e}); install ldap-utils"));
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into(),
        String::from_utf8_lossy(&out.stderr).into(),
    )
}

fn have_ldap_utils() -> bool {
    let ok = Command::new("ldapsearch").arg("-VV").output().is_ok();
    if !ok {
        assert!(std::env::var("CAIRN_REQUIRE_ALL").is_err(), "ldap-utils are required (CAIRN_REQUIRE_ALL)");
        eprintln!("skipped: ldap-utils not installed");
    }
    ok
}

/// OpenLDAP's own clients: the `ldapsearch` line of the issue, StartTLS and LDAPS verified
/// against the generated certificate, `ldapwhoami`, `ldapcompare`, and `ldappasswd` within
/// the password rules (the new password works, the old one no longer does).
#[test]
fn openldap_clients_work_over_plain_starttls_and_ldaps() {
    if !have_ldap_utils() {
        return;
    }
    let l = start(&Db::Sqlite);
    let s = &l.s;
    let alice = user(s, "alice", json!({}));
    associate(s, "user", &alice);
    let url = l.url();
    let ldaps = format!("ldaps://localhost:{}", l.ldaps);
    let starttls = format!("ldap://localhost:{}", l.port);
    let ca = l.cert().display().to_string();
    let env = [("LDAPTLS_CACERT", ca.as_str())];
    let d = dn("alice");

    let (rc, out, err) = tool("ldapsearch", &["-x", "-H", &url, "-D", &d, "-w", PW, "-b", BASE, "(mail=*)"], &[]);
    assert_eq!(rc, 0, "{err}");
    assert!(out.contains("mail: alice@example.com"), "{out}");
    let (rc, _, err) = tool("ldapsearch", &["-x", "-H", &url, "-D", &d, "-w", "wrong", "-b", BASE, "(mail=*)"], &[]);
    assert_eq!(rc, 49, "{err}");

    let (rc, out, err) =
        tool("ldapsearch", &["-x", "-ZZ", "-H", &starttls, "-D", &d, "-w", PW, "-b", BASE, "(uid=alice)", "uid"], &env);
    assert_eq!(rc, 0, "StartTLS: {err}");
    assert!(out.contains("uid: alice"), "{out}");
    let (rc, out, err) =
        tool("ldapsearch", &["-x", "-H", &ldaps, "-D", &d, "-w", PW, "-b", BASE, "(uid=alice)", "uid"], &env);
    assert_eq!(rc, 0, "LDAPS: {err}");
    assert!(out.contains("uid: alice"), "{out}");
    // A client that checks the certificate and was not given it refuses to go on.
    let (rc, _, _) =
        tool("ldapsearch", &["-x", "-H", &ldaps, "-b", "", "-s", "base"], &[("LDAPTLS_CACERT", "/dev/null")]);
    assert_ne!(rc, 0);

    let (rc, out, err) =
        tool("ldapsearch", &["-x", "-H", &url, "-s", "base", "-b", "cn=subschema", "objectClasses"], &[]);
    assert_eq!(rc, 0, "{err}");
    assert!(out.contains("posixAccount"), "{out}");

    let (rc, out, err) = tool("ldapwhoami", &["-x", "-H", &url, "-D", &d, "-w", PW], &[]);
    assert_eq!(rc, 0, "{err}");
    assert_eq!(out.trim(), format!("dn:{d}"));
    let (rc, out, _) = tool("ldapcompare", &["-x", "-H", &url, "-D", &d, "-w", PW, &d, "mail:alice@example.com"], &[]);
    assert_eq!(rc, 6, "{out}");
    assert!(out.contains("TRUE"), "{out}");

    // Too short for the policy: refused, naming why.
    let (rc, out, err) = tool("ldappasswd", &["-x", "-H", &url, "-D", &d, "-w", PW, "-a", PW, "-s", "short"], &[]);
    assert_ne!(rc, 0);
    let said = format!("{out}{err}");
    assert!(said.contains("Constraint violation") && said.contains("at least 12 characters"), "{said}");
    let new = "a completely different phrase";
    let (rc, _, err) = tool("ldappasswd", &["-x", "-H", &url, "-D", &d, "-w", PW, "-a", PW, "-s", new], &[]);
    assert_eq!(rc, 0, "{err}");
    assert_eq!(l.bind("alice", PW).1.rc, 49, "the old password no longer binds");
    assert_eq!(l.bind("alice", new).1.rc, 0);
}

/// Malformed and hostile input ends the connection, never the server.
#[test]
fn hostile_input_ends_the_connection_not_the_server() {
    use std::io::{Read, Write};
    let l = start(&Db::Sqlite);
    let addr = format!("127.0.0.1:{}", l.port);
    for junk in [
        vec![0x30, 0x84, 0xff, 0xff, 0xff, 0xff, 0x02, 0x01, 0x01],
        vec![0xff; 64],
        b"GET / HTTP/1.1\r\nHost: x\r\n\r\n".to_vec(),
        vec![0x30, 0x03, 0x02, 0x01],
    ] {
        let mut t = std::net::TcpStream::connect(&addr).unwrap();
        t.set_read_timeout(Some(std::time::Duration::from_secs(5))).unwrap();
        let _ = t.write_all(&junk);
        let mut buf = Vec::new();
        let _ = t.read_to_end(&mut buf);
    }
    // An oversized message.
    let mut t = std::net::TcpStream::connect(&addr).unwrap();
    t.set_read_timeout(Some(std::time::Duration::from_secs(5))).unwrap();
    let mut big = vec![0x30, 0x83, 0x10, 0x00, 0x00, 0x02, 0x01, 0x01];
    big.extend(std::iter::repeat_n(0u8, 0x10_0000));
    let _ = t.write_all(&big);
    let mut buf = Vec::new();
    let _ = t.read_to_end(&mut buf);
    // StartTLS twice (or after a bind) ends the connection.
    let mut c = l.conn();
    let r = c.simple_bind("", "").unwrap();
    assert_eq!(r.rc, 0);
    let alice = user(&l.s, "zed", json!({}));
    associate(&l.s, "user", &alice);
    let (mut c, _) = l.bind("zed", PW);
    let r = c.extended(ldap3::exop::Exop { name: Some("1.3.6.1.4.1.1466.20037".into()), val: None });
    assert!(r.is_err() || r.unwrap().1.rc != 0, "StartTLS after a bind is refused");
    // The server still answers.
    let mut c = l.conn();
    let (e, rc) = search(&mut c, "", Scope::Base, "(objectClass=*)", &["supportedLDAPVersion"]);
    assert_eq!((rc, e[0].attrs["supportedLDAPVersion"].clone()), (0, vec!["3".to_string()]));
}

/// The admin portal's LDAP page: where the server listens, its base DN and the line to try
/// it; associating a group by name and changing the lockout action take effect in the tree;
/// a read-only administrator changes nothing.
#[test]
fn the_admin_portal_ldap_page_manages_the_server() {
    const ADMIN_PW: &str = "correct horse battery staple";
    let l = start(&Db::Sqlite);
    let s = &l.s;
    for (email, role) in [("root@example.com", "admin"), ("viewer@example.com", "read-only")] {
        let out = s
            .command()
            .args(["admin", "create", "--email", email, "--password", ADMIN_PW, "--role", role])
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    }
    let kim = user(s, "kim", json!({}));
    group(s, "engineers", &[&kim], None);
    let login = |email: &str| {
        let mut b = common::Browser::new(&s.base);
        b.get("/admin/login");
        let p = b.post("/admin/login", &[("email", email), ("password", ADMIN_PW)]);
        b.follow(p);
        b
    };
    let mut b = login("root@example.com");
    let p = b.get("/admin/ldap");
    assert_eq!(p.status, 200, "{}", p.body);
    assert!(p.body.contains(&format!("ldap://127.0.0.1:{}", l.port)), "{}", p.body);
    assert!(p.body.contains(&format!("ldaps://127.0.0.1:{}", l.ldaps)));
    assert!(p.body.contains(BASE) && p.body.contains("ldapsearch -x -H"), "{}", p.body);
    assert!(p.body.contains("Nothing is associated"));
    assert_eq!(l.bind("kim", PW).1.rc, 49, "not associated yet");

    let p = b.post("/admin/ldap/associations", &[("op", "add"), ("type", "user_group"), ("name", "engineers")]);
    assert_eq!(p.status, 303, "{}", p.body);
    let p = b.get("/admin/ldap");
    assert!(p.body.contains(">engineers</a>"), "{}", p.body);
    assert_eq!(l.bind("kim", PW).1.rc, 0, "associated through the group");
    let p = b.post("/admin/ldap/associations", &[("op", "add"), ("type", "user_group"), ("name", "no such group")]);
    assert_eq!(p.status, 404);

    let mut ro = login("viewer@example.com");
    let p = ro.get("/admin/ldap");
    assert_eq!(p.status, 200);
    let p = ro.post("/admin/ldap", &[("userLockoutAction", "remove"), ("userPasswordExpirationAction", "remove")]);
    assert_eq!(p.status, 403);
    let p = b.post("/admin/ldap", &[("userLockoutAction", "remove"), ("userPasswordExpirationAction", "disable")]);
    assert_eq!(p.status, 303, "{}", p.body);
    let (_, v) = s.get("/api/v2/ldapservers");
    assert_eq!(
        (v[0]["userLockoutAction"].as_str(), v[0]["userPasswordExpirationAction"].as_str()),
        (Some("remove"), Some("disable"))
    );
}

/// Two processes on one PostgreSQL: a change made through one is in the other's tree as soon
/// as its notification arrives (milliseconds; the test allows seconds), and binds, which read
/// the database, follow at once.
#[test]
fn a_change_on_one_node_shows_on_the_other() {
    let Some(Db::Postgres(url)) = Db::all("ldap_two_nodes").into_iter().find(|d| matches!(d, Db::Postgres(_))) else {
        return;
    };
    let db = Db::Postgres(url);
    let a = start(&db);
    let b = start(&db);
    let svc = user(&a.s, "svc", json!({"ldap_binding_user": true}));
    associate(&a.s, "user", &svc);
    let (mut sc, r) = b.bind("svc", PW);
    assert_eq!(r.rc, 0, "a bind on the other node sees the new user at once");
    let nina = user(&a.s, "nina", json!({}));
    associate(&a.s, "user", &nina);
    let wait_for = |c: &mut LdapConn, filter: &str, want: usize| {
        let t = std::time::Instant::now();
        loop {
            let n = search(c, BASE, Scope::Subtree, filter, &["uid"]).0.len();
            if n == want || t.elapsed() > std::time::Duration::from_secs(10) {
                return n;
            }
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
    };
    assert_eq!(wait_for(&mut sc, "(uid=nina)", 1), 1);
    assert_eq!(b.bind("nina", PW).1.rc, 0);
    let (st, _) = a.s.post(&format!("/api/systemusers/{nina}/state/suspend"), json!({}));
    assert_eq!(st, 200);
    assert_eq!(b.bind("nina", PW).1.rc, 49, "binds on the other node are refused at once");
    assert_eq!(wait_for(&mut sc, "(&(uid=nina)(nsAccountLock=TRUE))", 1), 1);
}
