//! SCIM 2.0 end to end (§9): the real binary, driven the way Okta and Entra ID drive it, and
//! the two conformance suites (scim2-tester, scim-sanity) run against it.

mod common;

use std::process::Command;

use common::{Db, Server, KEY};
use serde_json::{json, Value};

const USER: &str = "urn:ietf:params:scim:schemas:core:2.0:User";
const PATCH: &str = "urn:ietf:params:scim:api:messages:2.0:PatchOp";

struct Scim<'a> {
    s: &'a Server,
    token: String,
}

impl Scim<'_> {
    fn req_full(
        &self,
        method: &str,
        path: &str,
        token: &str,
        body: Option<&Value>,
        hdr: &[(&str, &str)],
    ) -> (u16, Value, reqwest::header::HeaderMap) {
        let mut r = self.s.raw().request(method.parse().unwrap(), format!("{}/scim/v2{}", self.s.base, path));
        r = r.header("authorization", format!("Bearer {token}"));
        for (k, v) in hdr {
            r = r.header(*k, *v);
        }
        if let Some(b) = body {
            r = r.header("content-type", "application/scim+json").body(b.to_string());
        }
        let res = r.send().expect("request");
        let status = res.status().as_u16();
        let headers = res.headers().clone();
        let text = res.text().unwrap_or_default();
        let v = if text.is_empty() { Value::Null } else { serde_json::from_str(&text).unwrap_or(Value::String(text)) };
        (status, v, headers)
    }
    fn req(&self, method: &str, path: &str, body: Option<Value>) -> (u16, Value) {
        let (s, v, _) = self.req_full(method, path, &self.token, body.as_ref(), &[]);
        (s, v)
    }
}

fn scim(s: &Server) -> Scim<'_> {
    let (st, t) = s.post("/api/v2/scim/tokens", json!({ "name": "okta" }));
    assert_eq!(st, 201, "{t}");
    Scim { s, token: t["token"].as_str().unwrap().to_string() }
}

fn state_of(s: &Server, id: &str) -> String {
    let (st, u) = s.get(&format!("/api/systemusers/{id}"));
    assert_eq!(st, 200, "{u}");
    u["state"].as_str().unwrap().to_string()
}

fn okta_flow(db: &Db) {
    let s = Server::start(db);
    let c = scim(&s);
    // Okta: look the user up first, then create.
    let (st, list) =
        c.req("GET", "/Users?filter=userName%20eq%20%22Jane.Doe%40example.com%22&startIndex=1&count=100", None);
    assert_eq!(st, 200, "{list}");
    assert_eq!(list["totalResults"], 0);
    let body = json!({
        "schemas": [USER], "userName": "Jane.Doe@example.com",
        "name": { "givenName": "Jane", "familyName": "Doe" },
        "emails": [{ "primary": true, "value": "jane.doe@example.com", "type": "work" }],
        "displayName": "Jane Doe", "active": true, "password": "a very long passphrase 42",
    });
    let (st, u, h) = c.req_full("POST", "/Users", &c.token, Some(&body), &[]);
    assert_eq!(st, 201, "{u}");
    assert_eq!(h["content-type"], "application/scim+json");
    assert!(h.get("location").is_some() && h.get("etag").is_some());
    let id = u["id"].as_str().unwrap().to_string();
    assert_eq!(u["userName"], "Jane.Doe@example.com");
    assert_eq!(u["active"], true);
    assert!(u.get("password").is_none());
    assert!(u["meta"]["version"].is_string() && u["meta"]["created"].is_string());
    assert_eq!(state_of(&s, &id), "ACTIVATED");
    let (_, jc) = s.get(&format!("/api/systemusers/{id}"));
    assert_eq!(jc["creationSource"], "scim");
    // Duplicate → 409 uniqueness.
    let (st, e) = c.req("POST", "/Users", Some(body.clone()));
    assert_eq!(st, 409, "{e}");
    assert_eq!(e["scimType"], "uniqueness");
    // Lookup is case-insensitive.
    let (st, list) = c.req("GET", "/Users?filter=userName%20eq%20%22jane.doe%40EXAMPLE.com%22", None);
    assert_eq!(st, 200);
    assert_eq!(list["totalResults"], 1, "{list}");
    assert_eq!(list["Resources"][0]["id"], id.as_str());
    // Deactivate, reactivate.
    let off = json!({ "schemas": [PATCH], "Operations": [{ "op": "replace", "value": { "active": false } }] });
    let (st, u) = c.req("PATCH", &format!("/Users/{id}"), Some(off));
    assert_eq!(st, 200, "{u}");
    assert_eq!(u["active"], false);
    assert_eq!(state_of(&s, &id), "SUSPENDED");
    let on = json!({ "schemas": [PATCH], "Operations": [{ "op": "replace", "path": "active", "value": true }] });
    let (st, u) = c.req("PATCH", &format!("/Users/{id}"), Some(on));
    assert_eq!(st, 200, "{u}");
    assert_eq!(state_of(&s, &id), "ACTIVATED");
    // PUT answers 200 with the resource.
    let mut put = body.clone();
    put["name"]["givenName"] = json!("Janet");
    put.as_object_mut().unwrap().remove("password");
    let (st, u) = c.req("PUT", &format!("/Users/{id}"), Some(put));
    assert_eq!(st, 200, "{u}");
    assert_eq!(u["name"]["givenName"], "Janet");
    // Groups: create, push members, remove one.
    let (st, bob) = c.req(
        "POST",
        "/Users",
        Some(json!({ "schemas": [USER], "userName": "bob@example.com", "emails": [{ "value": "bob@example.com", "primary": true }] })),
    );
    assert_eq!(st, 201, "{bob}");
    let bob = bob["id"].as_str().unwrap().to_string();
    let (st, g) = c.req("POST", "/Groups", Some(json!({ "schemas": ["urn:ietf:params:scim:schemas:core:2.0:Group"], "displayName": "Engineering", "members": [] })));
    assert_eq!(st, 201, "{g}");
    let gid = g["id"].as_str().unwrap().to_string();
    let add = json!({ "schemas": [PATCH], "Operations": [{ "op": "add", "path": "members", "value": [{ "value": id }, { "value": bob }] }] });
    let (st, g) = c.req("PATCH", &format!("/Groups/{gid}"), Some(add));
    assert_eq!(st, 200, "{g}");
    assert_eq!(g["members"].as_array().unwrap().len(), 2);
    let rm = json!({ "schemas": [PATCH], "Operations": [{ "op": "remove", "path": format!("members[value eq \"{bob}\"]") }] });
    let (st, g) = c.req("PATCH", &format!("/Groups/{gid}"), Some(rm));
    assert_eq!(st, 200, "{g}");
    assert_eq!(g["members"].as_array().unwrap().len(), 1);
    let (_, members) = s.get(&format!("/api/v2/usergroups/{gid}/members"));
    assert_eq!(members.as_array().map(|a| a.len()), Some(1), "{members}");
    let (st, u) = c.req("GET", &format!("/Users/{id}"), None);
    assert_eq!(st, 200);
    assert_eq!(u["groups"][0]["value"], gid.as_str());
    // Tokens and keys stay on their own side.
    let (st, e, h) = c.req_full("GET", "/Users", "not-a-token", None, &[]);
    assert_eq!(st, 401, "{e}");
    assert_eq!(e["schemas"][0], "urn:ietf:params:scim:api:messages:2.0:Error");
    assert!(h.get("www-authenticate").is_some());
    let (st, _, _) = c.req_full("GET", "/Users", KEY, None, &[]);
    assert_eq!(st, 401, "an API key must not work on /scim/v2");
    let (st, _) = s.req("GET", "/api/systemusers", Some(&c.token), None);
    assert_eq!(st, 401, "a SCIM token must not work on /api");
    // Every change was recorded with source scim.
    let (_, ev) = s.get(&format!("/api/v2/events?target_id={id}"));
    let sources: Vec<&str> =
        ev.as_array().map(|a| a.iter().filter_map(|e| e["source"].as_str()).collect()).unwrap_or_default();
    if !sources.is_empty() {
        assert!(sources.iter().all(|s| *s == "scim"), "{ev}");
    }
    // Delete.
    let (st, _) = c.req("DELETE", &format!("/Users/{bob}"), None);
    assert_eq!(st, 204);
    let (st, e) = c.req("GET", &format!("/Users/{bob}"), None);
    assert_eq!(st, 404, "{e}");
    let (st, _) = c.req("DELETE", &format!("/Groups/{gid}"), None);
    assert_eq!(st, 204);
}

fn entra_flow(db: &Db) {
    let s = Server::start(db);
    let c = scim(&s);
    let ent = "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User";
    let body = json!({
        "schemas": [USER, ent], "externalId": "0a21f0f2-8d2a-4f8e-bf98-7363c4aed4ef",
        "userName": "Test_User_ab6490ee-1e48-479e-a20b-2d77186b5dd1@testuser.com", "active": false,
        "emails": [{ "primary": true, "type": "work", "value": "Test_User_fd0ea19b@testuser.com" }],
        "displayName": "Test User", "name": { "formatted": "givenName familyName", "familyName": "familyName", "givenName": "givenName" },
        ent: { "employeeNumber": "E-1001", "department": "Sales" },
    });
    let (st, u) = c.req("POST", "/Users", Some(body));
    assert_eq!(st, 201, "{u}");
    let id = u["id"].as_str().unwrap().to_string();
    assert_eq!(u["active"], false);
    assert_eq!(u[ent]["department"], "Sales");
    // active:false on create stages the user: no access, no mail, waiting for an admin.
    assert_eq!(state_of(&s, &id), "STAGED");
    // Entra looks up by externalId.
    let (st, l) = c.req("GET", "/Users?filter=externalId%20eq%20%220a21f0f2-8d2a-4f8e-bf98-7363c4aed4ef%22", None);
    assert_eq!(st, 200);
    assert_eq!(l["totalResults"], 1, "{l}");
    // Entra's PATCH: capitalised ops, string booleans, value paths.
    let p = json!({ "schemas": [PATCH], "Operations": [
        { "op": "Replace", "path": "emails[type eq \"work\"].value", "value": "updated@testuser.com" },
        { "op": "Replace", "path": "name.familyName", "value": "updatedFamilyName" },
        { "op": "Add", "path": format!("{ent}:department"), "value": "Marketing" },
        { "op": "Replace", "path": "active", "value": "True" },
    ]});
    let (st, u) = c.req("PATCH", &format!("/Users/{id}"), Some(p));
    assert_eq!(st, 200, "{u}");
    assert_eq!(u["emails"][0]["value"], "updated@testuser.com");
    assert_eq!(u["name"]["familyName"], "updatedFamilyName");
    assert_eq!(u[ent]["department"], "Marketing");
    assert_eq!(state_of(&s, &id), "ACTIVATED");
    let p = json!({ "schemas": [PATCH], "Operations": [{ "op": "Replace", "path": "active", "value": "False" }] });
    let (st, _) = c.req("PATCH", &format!("/Users/{id}"), Some(p));
    assert_eq!(st, 200);
    assert_eq!(state_of(&s, &id), "SUSPENDED");
    // Groups: multi-member add and remove in one request.
    let mut ids = vec![];
    for n in 0..3 {
        let (st, u) = c.req(
            "POST",
            "/Users",
            Some(json!({ "userName": format!("member{n}"), "emails": [{ "value": format!("m{n}@x.org") }] })),
        );
        assert_eq!(st, 201, "{u}");
        ids.push(u["id"].as_str().unwrap().to_string());
    }
    let (st, g) = c.req("POST", "/Groups", Some(json!({ "displayName": "Sales", "externalId": "g-1" })));
    assert_eq!(st, 201, "{g}");
    let gid = g["id"].as_str().unwrap().to_string();
    let add: Vec<Value> = ids.iter().map(|i| json!({ "value": i })).collect();
    let (st, g) = c.req(
        "PATCH",
        &format!("/Groups/{gid}"),
        Some(json!({ "schemas": [PATCH], "Operations": [{ "op": "Add", "path": "members", "value": add }] })),
    );
    assert_eq!(st, 200, "{g}");
    assert_eq!(g["members"].as_array().unwrap().len(), 3);
    let rm = vec![json!({ "value": ids[0] }), json!({ "value": ids[1] })];
    let (st, g) = c.req(
        "PATCH",
        &format!("/Groups/{gid}"),
        Some(json!({ "schemas": [PATCH], "Operations": [{ "op": "Remove", "path": "members", "value": rm }] })),
    );
    assert_eq!(st, 200, "{g}");
    assert_eq!(g["members"], json!([{ "value": ids[2], "$ref": format!("{}/scim/v2/Users/{}", s.base, ids[2]) }]));
    // Lists: excludedAttributes, count=0, filters on groups, .search, sort.
    let (st, l) = c.req("GET", "/Groups?excludedAttributes=members", None);
    assert_eq!(st, 200);
    assert!(l["Resources"][0].get("members").is_none(), "{l}");
    let (_, l) = c.req("GET", "/Users?count=0", None);
    assert_eq!(l["totalResults"], 4);
    assert_eq!(l["Resources"], json!([]));
    let (_, l) = c.req("GET", &format!("/Groups?filter=members%20eq%20%22{}%22", ids[2]), None);
    assert_eq!(l["totalResults"], 1, "{l}");
    let (_, l) = c.req("GET", "/Groups?filter=displayName%20eq%20%22sales%22", None);
    assert_eq!(l["totalResults"], 1, "{l}");
    let (st, l) = c.req(
        "POST",
        "/Users/.search",
        Some(json!({ "schemas": ["urn:ietf:params:scim:api:messages:2.0:SearchRequest"], "filter": "userName sw \"member\" and not (userName eq \"member1\")", "sortBy": "userName", "sortOrder": "descending", "startIndex": 1, "count": 10, "attributes": ["userName"] })),
    );
    assert_eq!(st, 200, "{l}");
    let names: Vec<&str> = l["Resources"].as_array().unwrap().iter().map(|r| r["userName"].as_str().unwrap()).collect();
    assert_eq!(names, vec!["member2", "member0"]);
    assert!(l["Resources"][0].get("emails").is_none());
    // Malformed filters are SCIM 400s, never 500s.
    for f in ["userName%20eq", "userName%20eq%20%22x", "(userName%20eq%20%22a%22", "nickName%20eq%20%22x%22"] {
        let (st, e) = c.req("GET", &format!("/Users?filter={f}"), None);
        assert_eq!(st, 400, "{f}: {e}");
        assert_eq!(e["scimType"], "invalidFilter", "{f}: {e}");
    }
    // ETags: a stale If-Match is refused.
    let (_, u, h) = c.req_full("GET", &format!("/Users/{}", ids[2]), &c.token, None, &[]);
    let etag = h["etag"].to_str().unwrap().to_string();
    assert_eq!(u["meta"]["version"], etag.as_str());
    let p = json!({ "schemas": [PATCH], "Operations": [{ "op": "replace", "path": "displayName", "value": "M2" }] });
    let (st, _, _) = c.req_full("PATCH", &format!("/Users/{}", ids[2]), &c.token, Some(&p), &[("if-match", &etag)]);
    assert_eq!(st, 200);
    let (st, e, _) = c.req_full("PATCH", &format!("/Users/{}", ids[2]), &c.token, Some(&p), &[("if-match", &etag)]);
    assert_eq!(st, 412, "{e}");
    let (st, _, _) = c.req_full("GET", &format!("/Users/{}", ids[2]), &c.token, None, &[("if-none-match", &etag)]);
    assert_eq!(st, 200);
    // Discovery.
    for p in
        ["/ServiceProviderConfig", "/ResourceTypes", "/Schemas", "/Schemas/urn:ietf:params:scim:schemas:core:2.0:User"]
    {
        let (st, v) = c.req("GET", p, None);
        assert_eq!(st, 200, "{p}: {v}");
    }
    // Token admin: list shows no secret; a deleted token stops working.
    let (_, list) = s.get("/api/v2/scim/tokens");
    assert!(list[0].get("token").is_none() && list[0]["prefix"].is_string(), "{list}");
    let tid = list[0]["id"].as_str().unwrap();
    let (st, _) = s.delete(&format!("/api/v2/scim/tokens/{tid}"));
    assert_eq!(st, 200);
    let (st, _) = c.req("GET", "/Users", None);
    assert_eq!(st, 401);
}

#[test]
fn okta_provisioning_flow() {
    for db in Db::all("scim okta flow") {
        okta_flow(&db);
    }
}

#[test]
fn entra_provisioning_flow() {
    for db in Db::all("scim entra flow") {
        entra_flow(&db);
    }
}

fn python_has(module: &str) -> bool {
    Command::new("python3").args(["-c", &format!("import {module}")]).output().is_ok_and(|o| o.status.success())
}

const TESTER: &str = r#"
import sys
from httpx2 import Client
from scim2_client.engines.httpx2 import SyncSCIMClient
from scim2_tester import check_server, Status
client = SyncSCIMClient(Client(base_url=sys.argv[1], headers={"Authorization": "Bearer " + sys.argv[2]}))
client.discover()
# No known deviations: every check must pass.
KNOWN = set()
bad = 0
results = check_server(client)
for r in results:
    known = (r.title, r.resource_type, (r.reason or "").strip()) in KNOWN
    ok = known or r.status in (Status.SUCCESS, Status.COMPLIANT, Status.ACCEPTABLE, Status.SKIPPED)
    print(("known" if known else "ok  " if ok else "FAIL"), r.status.name, r.title, r.resource_type or "", "" if ok else (r.reason or ""))
    bad += 0 if ok else 1
print(f"{len(results) - bad} passed, {bad} failed")
sys.exit(1 if bad else 0)
"#;

#[test]
fn conformance_suites_pass() {
    if !python_has("scim2_tester") || !python_has("scim2_client") || !python_has("httpx2") {
        cairn_store::testing::skip(
            "scim2-tester conformance",
            "python3 -m pip install scim2-tester scim2-client[httpx2]",
        );
        return;
    }
    let sanity = Command::new("scim-sanity").arg("--help").output().is_ok_and(|o| o.status.success());
    if !sanity {
        cairn_store::testing::skip("scim-sanity conformance", "python3 -m pip install scim-sanity");
        return;
    }
    let s = Server::start(&Db::Sqlite);
    let c = scim(&s);
    let url = format!("{}/scim/v2", s.base);
    let out = Command::new("python3").args(["-c", TESTER, &url, &c.token]).output().expect("python3");
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    println!("scim2-tester:\n{text}");
    assert!(out.status.success(), "scim2-tester reported failures:\n{text}");
    let out = Command::new("scim-sanity")
        .args(["probe", &url, "--token", &c.token, "--i-accept-side-effects"])
        .output()
        .expect("scim-sanity");
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    println!("scim-sanity:\n{text}");
    let failures: Vec<&str> =
        text.lines().map(str::trim).filter(|l| l.starts_with("[FAIL]") || l.starts_with("[ERROR]")).collect();
    assert!(failures.is_empty(), "scim-sanity probe reported failures: {failures:?}\n{text}");
    assert!(text.contains(" passed, "), "scim-sanity printed no summary:\n{text}");
}

#[test]
fn unknown_member_ids_are_accepted_and_recorded_not_stored() {
    let s = Server::start(&Db::Sqlite);
    let c = scim(&s);
    let (st, g) = c.req(
        "POST",
        "/Groups",
        Some(json!({ "schemas": ["urn:ietf:params:scim:schemas:core:2.0:Group"], "displayName": "ops" })),
    );
    assert_eq!(st, 201, "{g}");
    let id = g["id"].as_str().unwrap();
    let patch = json!({ "schemas": ["urn:ietf:params:scim:api:messages:2.0:PatchOp"],
        "Operations": [{ "op": "add", "path": "members", "value": [{ "value": "fake-member-id" }] }] });
    let (st, g) = c.req("PATCH", &format!("/Groups/{id}"), Some(patch));
    assert_eq!(st, 200, "{g}");
    assert!(g.get("members").map(|m| m.as_array().unwrap().is_empty()).unwrap_or(true), "no such user is stored: {g}");
    let (_, evs) = s.get("/api/v2/events?action=group_member_ignored");
    assert_eq!(evs[0]["detail"]["ignored_member_ids"], json!(["fake-member-id"]), "the ignored id is in the event log");
}

#[test]
fn locations_come_from_the_base_url_never_from_the_host_header() {
    let s = Server::start(&Db::Sqlite);
    let c = scim(&s);
    let evil = [("host", "evil.example"), ("x-forwarded-proto", "https")];
    let body = json!({ "schemas": [USER], "userName": "hosted", "emails": [{ "value": "hosted@example.com" }] });
    let (st, u, h) = c.req_full("POST", "/Users", &c.token, Some(&body), &evil);
    assert_eq!(st, 201, "{u}");
    let want = format!("{}/scim/v2/Users/{}", s.base, u["id"].as_str().unwrap());
    assert_eq!(u["meta"]["location"], json!(want), "{u}");
    assert_eq!(h["location"].to_str().unwrap(), want);
    let (st, list, _) = c.req_full("GET", "/Users?filter=userName%20eq%20%22hosted%22", &c.token, None, &evil);
    assert_eq!(st, 200, "{list}");
    assert_eq!(list["Resources"][0]["meta"]["location"], json!(want));
    let (_, types, _) = c.req_full("GET", "/ResourceTypes/User", &c.token, None, &evil);
    assert!(types["meta"]["location"].as_str().unwrap().starts_with(&s.base), "{types}");
    // A filter the store cannot translate is still SCIM's invalidFilter.
    let (st, e) = c.req("GET", "/Users?filter=nosuchattr%20eq%20%22x%22", None);
    assert_eq!((st, e["scimType"].as_str()), (400, Some("invalidFilter")), "{e}");
}
