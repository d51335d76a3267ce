//! Directory integration end to end (§12, issue 18): the real binary on both databases against
//! a real OpenLDAP `slapd` started here (back-mdb, users with cleartext passwords, a group, a
//! disabled user). Import (dry run, then for real), changes upstream, leavers suspended and
//! reactivated, groups mirrored, upstream-owned fields refused over REST and SCIM, delegated
//! sign-in through the user portal (right, wrong, upstream down), and the API's refusals.
//! Over TLS (a CA and certificate made at test time): ldaps://, StartTLS and a pinned
//! fingerprint, and the refusals of a wrong fingerprint, another CA and the system's CAs.

mod common;

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use common::{Browser, Db, Server, KEY};
use ldap3::{LdapConn, Mod};
use serde_json::{json, Value};

const SLAPD: &str = "/usr/sbin/slapd";
const BASE: &str = "dc=example,dc=org";
const ROOT_DN: &str = "cn=admin,dc=example,dc=org";
const ROOT_PW: &str = "admin-secret";

struct Slapd {
    dir: PathBuf,
    port: u16,
    /// The ldaps:// port of a slapd started with a [`Pki`].
    tls_port: Option<u16>,
    pid: Option<u32>,
}

impl Slapd {
    fn url(&self) -> String {
        format!("ldap://127.0.0.1:{}", self.port)
    }
    fn ldaps_url(&self) -> String {
        format!("ldaps://127.0.0.1:{}", self.tls_port.expect("a slapd with TLS"))
    }
    fn start(&mut self) {
        let mut listen = format!("{}/", self.url());
        if self.tls_port.is_some() {
            listen += &format!(" {}/", self.ldaps_url());
        }
        let st = Command::new(SLAPD)
            .args(["-f", &self.dir.join("slapd.conf").to_string_lossy(), "-h", &listen])
            .status()
            .expect("slapd runs");
        assert!(st.success(), "slapd did not start");
        let pidfile = self.dir.join("slapd.pid");
        let t = Instant::now();
        while t.elapsed() < Duration::from_secs(10) {
            if let Ok(p) = std::fs::read_to_string(&pidfile) {
                if let Ok(pid) = p.trim().parse() {
                    if LdapConn::new(&self.url()).is_ok() {
                        self.pid = Some(pid);
                        if self.tls_port.is_some() {
                            self.check_tls();
                        }
                        return;
                    }
                }
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        panic!("slapd did not come up");
    }
    fn stop(&mut self) {
        if let Some(pid) = self.pid.take() {
            let _ = Command::new("kill").arg(pid.to_string()).status();
            let t = Instant::now();
            while t.elapsed() < Duration::from_secs(10)
                && std::net::TcpStream::connect(("127.0.0.1", self.port)).is_ok()
            {
                std::thread::sleep(Duration::from_millis(100));
            }
            let _ = std::fs::remove_file(self.dir.join("slapd.pid"));
        }
    }
    /// OpenLDAP's own client, trusting only the test CA, reads the root DSE over ldaps:// and
    /// over StartTLS: the upstream really serves TLS with this certificate before Cairn is
    /// pointed at it, so a failure later is Cairn's, not the test set-up's.
    fn check_tls(&self) {
        for args in [vec!["-H", &self.ldaps_url()], vec!["-ZZ", "-H", &self.url()]] {
            let out = Command::new("ldapsearch")
                .args(args)
                .args(["-x", "-LLL", "-b", "", "-s", "base", "namingContexts"])
                .env("LDAPTLS_CACERT", self.dir.join("tls/ca.pem"))
                .env("LDAPTLS_REQCERT", "demand")
                .output()
                .expect("ldapsearch (ldap-utils) runs");
            assert!(
                out.status.success() && String::from_utf8_lossy(&out.stdout).contains(BASE),
                "slapd does not serve TLS: {}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
        }
    }
    fn admin(&self) -> LdapConn {
        let mut c = LdapConn::new(&self.url()).unwrap();
        c.simple_bind(ROOT_DN, ROOT_PW).unwrap().success().unwrap();
        c
    }

    /// Adds `uid=<uid>,ou=people` upstream (cn and sn made up), with `extra` attributes.
    fn add_person(&self, uid: &str, extra: &[(&str, &str)]) {
        let cn = format!("{uid} Person");
        let mut attrs = vec![
            ("objectClass", HashSet::from(["inetOrgPerson"])),
            ("uid", HashSet::from([uid])),
            ("cn", HashSet::from([cn.as_str()])),
            ("sn", HashSet::from(["Person"])),
        ];
        attrs.extend(extra.iter().map(|(k, v)| (*k, HashSet::from([*v]))));
        self.admin().add(&format!("uid={uid},ou=people,{BASE}"), attrs).unwrap().success().unwrap();
    }
}

impl Drop for Slapd {
    fn drop(&mut self) {
        self.stop();
    }
}

fn person(uid: &str, mail: &str, extra: &str) -> String {
    format!(
        "dn: uid={uid},ou=people,{BASE}\nobjectClass: inetOrgPerson\nuid: {uid}\ncn: {uid} Person\nsn: Person\n\
         givenName: {uid}\nmail: {mail}\nuserPassword: pw-{uid}-upstream\n{extra}\n"
    )
}

/// A throwaway PKI made at test time: a CA, the upstream's certificate for 127.0.0.1 and
/// localhost signed by it, and another CA that signed nothing.
struct Pki {
    ca_pem: String,
    other_ca_pem: String,
    cert_pem: String,
    key_pem: String,
    /// SHA-256 of the server certificate's DER in hex: what a connection's `fingerprint` pins.
    fingerprint: String,
}

fn pki() -> Pki {
    use rcgen::{BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair};
    use sha2::Digest;
    let ca = |name: &str| {
        let mut p = CertificateParams::new(Vec::<String>::new()).unwrap();
        p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        p.distinguished_name.push(DnType::CommonName, name);
        let key = KeyPair::generate().unwrap();
        (p.self_signed(&key).unwrap().pem(), Issuer::new(p, key))
    };
    let (ca_pem, issuer) = ca("Cairn test upstream CA");
    let (other_ca_pem, _) = ca("Some other CA");
    let mut p = CertificateParams::new(vec!["127.0.0.1".to_string(), "localhost".to_string()]).unwrap();
    p.distinguished_name.push(DnType::CommonName, "localhost");
    p.extended_key_usages.push(ExtendedKeyUsagePurpose::ServerAuth);
    p.use_authority_key_identifier_extension = true;
    let key = KeyPair::generate().unwrap();
    let cert = p.signed_by(&key, &issuer).unwrap();
    let fingerprint = sha2::Sha256::digest(cert.der()).iter().map(|b| format!("{b:02x}")).collect();
    Pki { ca_pem, other_ca_pem, cert_pem: cert.pem(), key_pem: key.serialize_pem(), fingerprint }
}

/// A throwaway slapd on a free port, or `None` (skipped; a failure under CAIRN_REQUIRE_ALL)
/// when OpenLDAP's server is not installed. With a [`Pki`] it also serves TLS: StartTLS on
/// its ldap:// port and ldaps:// on a second one.
fn slapd(dir: &Path, tls: Option<&Pki>) -> Option<Slapd> {
    slapd_with(dir, tls, 0)
}

/// [`slapd`] with `extra` more people (`p00000`, …) in the same OU.
fn slapd_with(dir: &Path, tls: Option<&Pki>, extra: usize) -> Option<Slapd> {
    if !Path::new(SLAPD).exists() || Command::new("/usr/sbin/slapadd").arg("-V").output().is_err() {
        cairn_store::testing::skip(
            "directory integration",
            "OpenLDAP slapd is not installed (apt-get install slapd ldap-utils)",
        );
        return None;
    }
    std::fs::create_dir_all(dir.join("db")).unwrap();
    let mut tls_conf = String::new();
    if let Some(pki) = tls {
        let t = dir.join("tls");
        std::fs::create_dir_all(&t).unwrap();
        std::fs::write(t.join("ca.pem"), &pki.ca_pem).unwrap();
        std::fs::write(t.join("server.pem"), &pki.cert_pem).unwrap();
        std::fs::write(t.join("server.key"), &pki.key_pem).unwrap();
        tls_conf = format!(
            "TLSCACertificateFile {t}/ca.pem\nTLSCertificateFile {t}/server.pem\n\
             TLSCertificateKeyFile {t}/server.key\n",
            t = t.display()
        );
    }
    let conf = format!(
        "include /etc/ldap/schema/core.schema\ninclude /etc/ldap/schema/cosine.schema\n\
         include /etc/ldap/schema/inetorgperson.schema\ninclude /etc/ldap/schema/nis.schema\n\
         modulepath /usr/lib/ldap\nmoduleload back_mdb\npidfile {d}/slapd.pid\n{tls_conf}\
         database mdb\nmaxsize 104857600\nsuffix \"{BASE}\"\nrootdn \"{ROOT_DN}\"\nrootpw {ROOT_PW}\n\
         directory {d}/db\nindex objectClass eq\nindex uid eq\n\
         access to attrs=userPassword by anonymous auth by self write by * none\naccess to * by * read\n",
        d = dir.display()
    );
    std::fs::write(dir.join("slapd.conf"), conf).unwrap();
    let mut ldif = format!(
        "dn: {BASE}\nobjectClass: dcObject\nobjectClass: organization\ndc: example\no: Example\n\n\
         dn: ou=people,{BASE}\nobjectClass: organizationalUnit\nou: people\n\n\
         dn: ou=groups,{BASE}\nobjectClass: organizationalUnit\nou: groups\n\n"
    );
    ldif += &person(
        "ada",
        "ada@example.org",
        "departmentNumber: Engines\ntitle: Analyst\ntelephoneNumber: +1 555 0100\nmobile: +1 555 0199\n",
    );
    ldif += &person("bob", "bob@example.org", &format!("manager: uid=ada,ou=people,{BASE}\n"));
    ldif += &person("carol", "carol@example.org", "employeeType: disabled\n");
    ldif += &format!(
        "dn: cn=eng,ou=groups,{BASE}\nobjectClass: groupOfNames\ncn: eng\n\
         member: uid=ada,ou=people,{BASE}\nmember: uid=bob,ou=people,{BASE}\n\n"
    );
    for i in 0..extra {
        ldif += &format!(
            "dn: uid=p{i:05},ou=people,{BASE}\nobjectClass: inetOrgPerson\nuid: p{i:05}\ncn: P {i}\nsn: P{i}\n\
             mail: p{i:05}@example.org\ndepartmentNumber: D{}\n\n",
            i % 7
        );
    }
    std::fs::write(dir.join("data.ldif"), ldif).unwrap();
    let out = Command::new("/usr/sbin/slapadd")
        .args(["-q", "-f", &dir.join("slapd.conf").to_string_lossy(), "-l", &dir.join("data.ldif").to_string_lossy()])
        .output()
        .unwrap();
    assert!(out.status.success(), "slapadd: {}", String::from_utf8_lossy(&out.stderr));
    let tls_port = tls.map(|_| common::free_port());
    let mut s = Slapd { dir: dir.to_path_buf(), port: common::free_port(), tls_port, pid: None };
    s.start();
    Some(s)
}

fn connection_body(url: &str) -> Value {
    json!({
        "name": "corp",
        "url": url,
        "bindDn": ROOT_DN,
        "bindPassword": ROOT_PW,
        "userBase": format!("ou=people,{BASE}"),
        "userFilter": "(&(objectClass=inetOrgPerson)(!(description=left)))",
        "groupBase": format!("ou=groups,{BASE}"),
        "preset": "openldap",
        "attributeMapping": { "disabled": "employeeType" },
        "passwordAuthority": "delegated",
    })
}

/// Runs a sync and waits for its end; its status document.
fn sync(s: &Server, id: &str, dry_run: bool) -> Value {
    let q = if dry_run { "?dry_run=true" } else { "" };
    let (st, v) = s.post(&format!("/api/v2/directories/{id}/sync{q}"), json!({}));
    assert_eq!(st, 202, "{v}");
    let job = v["jobId"].as_str().unwrap().to_string();
    let t = Instant::now();
    loop {
        let (st, j) = s.get(&format!("/api/v2/directories/{id}/sync/{job}"));
        assert_eq!(st, 200, "{j}");
        if matches!(j["status"].as_str(), Some("done" | "failed")) {
            return j;
        }
        assert!(t.elapsed() < Duration::from_secs(60), "the sync did not end: {j}");
        // Polled closely: a sync seen done must let the next one start at once (a run used to
        // free its place only after reporting itself done, and a quick client got a 409).
        std::thread::sleep(Duration::from_millis(5));
    }
}

fn user(s: &Server, name: &str) -> Value {
    let (st, v) = s.get(&format!("/api/systemusers?filter=username:$eq:{name}"));
    assert_eq!(st, 200, "{v}");
    assert_eq!(v["totalCount"], 1, "{name}: {v}");
    v["results"][0].clone()
}

fn count_users(s: &Server) -> i64 {
    s.get("/api/systemusers?limit=1").1["totalCount"].as_i64().unwrap()
}

#[test]
fn directory_is_imported_followed_and_checks_delegated_passwords() {
    for db in Db::all("dirsync") {
        let tmp = tempfile::tempdir().unwrap();
        let Some(mut up) = slapd(&tmp.path().join("slapd"), None) else { return };
        let s = Server::start(&db);

        // The connection: the password is sealed, never answered.
        let (st, c) = s.post("/api/v2/directories", connection_body(&up.url()));
        assert_eq!(st, 201, "{c}");
        let id = c["id"].as_str().unwrap().to_string();
        assert_eq!(c["bindPasswordSet"], true);
        assert!(!c.to_string().contains(ROOT_PW), "the bind password is never returned: {c}");
        let (_, listed) = s.get("/api/v2/directories");
        assert_eq!(listed["totalCount"], 1);
        assert!(!listed.to_string().contains(ROOT_PW));

        // A dry run reports and changes nothing.
        let before = count_users(&s);
        let j = sync(&s, &id, true);
        assert_eq!(j["status"], "done", "{j}");
        assert_eq!(j["counts"]["created"], 3, "{j}");
        assert_eq!((j["counts"]["error"].as_i64(), j["counts"]["groups"].as_i64()), (Some(0), Some(1)), "{j}");
        assert_eq!(count_users(&s), before, "a dry run creates nobody");
        assert_eq!(s.get("/api/v2/usergroups").1.as_array().unwrap().len(), 0, "nor groups");

        // First import: the manualEntry default (ACTIVATED); the disabled user SUSPENDED.
        let j = sync(&s, &id, false);
        assert_eq!((j["status"].as_str(), j["counts"]["created"].as_i64()), (Some("done"), Some(3)), "{j}");
        let (_, results) =
            s.get(&format!("/api/v2/directories/{id}/sync/{}/results?limit=100", j["jobId"].as_str().unwrap()));
        assert_eq!(results.as_array().unwrap().len(), 3, "{results}");
        let ada = user(&s, "ada");
        assert_eq!(ada["state"], "ACTIVATED");
        assert_eq!(ada["creationSource"], "adi");
        assert_eq!(ada["department"], "Engines");
        assert_eq!(ada["delegatedAuthority"]["id"], id.as_str());
        let owned: Vec<&str> =
            ada["restrictedFields"].as_array().unwrap().iter().filter_map(|f| f["field"].as_str()).collect();
        assert!(owned.contains(&"email") && owned.contains(&"username"), "{owned:?}");
        assert_eq!(owned.iter().filter(|f| **f == "phoneNumbers").count(), 1, "{owned:?}");
        // Stored packed, read back whole: every entry names the connection.
        for f in ada["restrictedFields"].as_array().unwrap() {
            assert_eq!(f.as_object().unwrap().keys().collect::<Vec<_>>(), ["field", "type", "id"], "{f}");
            assert_eq!((f["type"].as_str(), f["id"].as_str()), (Some("active_directory"), Some(id.as_str())), "{f}");
        }
        assert_eq!(
            ada["phoneNumbers"],
            json!([{"type": "work", "number": "+1 555 0100"}, {"type": "mobile", "number": "+1 555 0199"}])
        );
        assert_eq!(user(&s, "carol")["state"], "SUSPENDED", "disabled upstream");
        // An admin reactivates her by hand. Nothing changed upstream, but the user did in Cairn
        // since the sync last wrote her: the next sync compares her and suspends her again,
        // while the two it left untouched are counted unchanged without being read.
        let carol = user(&s, "carol")["_id"].as_str().unwrap().to_string();
        let (st, e) = s.put(&format!("/api/systemusers/{carol}"), json!({ "state": "ACTIVATED" }));
        assert_eq!(st, 200, "{e}");
        assert_eq!(user(&s, "carol")["state"], "ACTIVATED");
        let j = sync(&s, &id, false);
        assert_eq!((j["counts"]["suspended"].as_i64(), j["counts"]["unchanged"].as_i64()), (Some(1), Some(2)), "{j}");
        assert_eq!(user(&s, "carol")["state"], "SUSPENDED", "still disabled upstream");
        let (_, mails) = s.get("/api/v2/emails?to=ada@example.org");
        let mails = if mails.is_array() { mails } else { mails["results"].clone() };
        assert_eq!(mails.as_array().map(Vec::len), Some(0), "delegated users get no activation link: {mails}");
        let bob = user(&s, "bob");
        let bob_id = bob["_id"].as_str().unwrap().to_string();
        let ada_id = ada["_id"].as_str().unwrap().to_string();
        assert_eq!(bob["manager"], ada_id.as_str(), "the manager DN resolves to the linked user: {bob}");
        assert_eq!(bob["phoneNumbers"], json!([]));

        // Every change is an event of source adi.
        let (_, ev) = s.get(&format!("/api/v2/events?user_id={ada_id}"));
        let ev = if ev.is_array() { ev } else { ev["results"].clone() };
        let created = ev.as_array().unwrap().iter().find(|e| e["action"] == "user_create" && e["source"] == "adi");
        let created = created.unwrap_or_else(|| panic!("no user_create event of source adi: {ev}"));
        // The creation's restrictedFields read back as the user has them.
        let set = created["changes"].as_array().unwrap().iter().find(|c| c["field"] == "restrictedFields");
        assert_eq!(set.map(|c| &c["new"]), Some(&ada["restrictedFields"]), "{created}");

        // The group is mirrored with its members.
        let (_, groups) = s.get("/api/v2/usergroups");
        let eng = groups.as_array().unwrap().iter().find(|g| g["name"] == "eng").expect("eng mirrored").clone();
        let gid = eng["id"].as_str().unwrap().to_string();
        let members = |s: &Server| -> HashSet<String> {
            let (_, m) = s.get(&format!("/api/v2/usergroups/{gid}/members?limit=100"));
            m.as_array().unwrap().iter().map(|x| x["to"]["id"].as_str().unwrap().to_string()).collect()
        };
        assert_eq!(members(&s), HashSet::from([ada_id.clone(), bob_id.clone()]));

        // A re-sync with nothing changed upstream changes nothing.
        let j = sync(&s, &id, false);
        assert_eq!(j["counts"]["unchanged"], 3, "{j}");

        // Upstream-owned fields are refused over REST and SCIM; others still change.
        let (st, e) = s.put(&format!("/api/systemusers/{bob_id}"), json!({ "email": "bob@elsewhere.example" }));
        assert_eq!(st, 409, "{e}");
        assert!(e["message"].as_str().unwrap().contains("email"), "{e}");
        let (st, e) = s.put(&format!("/api/systemusers/{bob_id}"), json!({ "description": "mine" }));
        assert_eq!(st, 200, "{e}");
        let (st, t) = s.post("/api/v2/scim/tokens", json!({ "name": "idp" }));
        assert_eq!(st, 201, "{t}");
        let token = t["token"].as_str().unwrap();
        let patch = json!({
            "schemas": ["urn:ietf:params:scim:api:messages:2.0:PatchOp"],
            "Operations": [{ "op": "replace", "path": "userName", "value": "robert" }]
        });
        let res = s
            .raw()
            .patch(format!("{}/scim/v2/Users/{bob_id}", s.base))
            .header("authorization", format!("Bearer {token}"))
            .header("content-type", "application/scim+json")
            .body(patch.to_string())
            .send()
            .unwrap();
        let status = res.status().as_u16();
        let body = res.text().unwrap();
        assert_eq!(status, 409, "{body}");
        assert!(body.contains("username"), "{body}");
        assert_eq!(user(&s, "bob")["username"], "bob");
        // Phone numbers the upstream owns are refused over REST too.
        let (st, e) = s.put(
            &format!("/api/systemusers/{bob_id}"),
            json!({ "phoneNumbers": [{"type": "work", "number": "+1 555 0123"}] }),
        );
        assert_eq!(st, 409, "{e}");
        assert!(e["message"].as_str().unwrap().contains("phoneNumbers"), "{e}");
        let carol_id = user(&s, "carol")["_id"].as_str().unwrap().to_string();
        let (st, e) = s.put(&format!("/api/systemusers/{bob_id}"), json!({ "manager": carol_id }));
        assert_eq!(st, 409, "{e}");
        assert!(e["message"].as_str().unwrap().contains("manager"), "{e}");

        // Changes upstream: a new address, a leaver (out of the filter), a deleted user.
        let mut admin = up.admin();
        let bob_dn = format!("uid=bob,ou=people,{BASE}");
        let ada_dn = format!("uid=ada,ou=people,{BASE}");
        admin
            .modify(
                &bob_dn,
                vec![
                    Mod::Replace("mail", HashSet::from(["bob@new.example.org"])),
                    Mod::Add("mobile", HashSet::from(["+1 555 0142"])),
                    Mod::Delete("manager", HashSet::new()),
                ],
            )
            .unwrap()
            .success()
            .unwrap();
        admin.modify(&ada_dn, vec![Mod::Add("description", HashSet::from(["left"]))]).unwrap().success().unwrap();
        admin.delete(&format!("uid=carol,ou=people,{BASE}")).unwrap().success().unwrap();
        let j = sync(&s, &id, false);
        assert_eq!(j["status"], "done", "{j}");
        assert_eq!(user(&s, "bob")["email"], "bob@new.example.org");
        assert_eq!(user(&s, "bob")["phoneNumbers"], json!([{"type": "mobile", "number": "+1 555 0142"}]));
        let bob_now = user(&s, "bob");
        assert!(bob_now["manager"].as_str().unwrap_or("").is_empty(), "manager removed upstream: {bob_now}");
        assert_eq!(user(&s, "ada")["state"], "SUSPENDED", "out of the filter: suspended");
        assert_eq!(user(&s, "carol")["state"], "SUSPENDED", "deleted upstream: suspended, never deleted");
        assert_eq!(members(&s), HashSet::from([ada_id.clone(), bob_id.clone()]), "membership still mirrored");

        // The leaver returns: reactivated.
        admin.modify(&ada_dn, vec![Mod::Delete("description", HashSet::new())]).unwrap().success().unwrap();
        let j = sync(&s, &id, false);
        assert_eq!(j["counts"]["reactivated"], 1, "{j}");
        assert_eq!(user(&s, "ada")["state"], "ACTIVATED");
        // Removed from the group upstream: removed in Cairn.
        admin
            .modify(&format!("cn=eng,ou=groups,{BASE}"), vec![Mod::Delete("member", HashSet::from([bob_dn.as_str()]))])
            .unwrap()
            .success()
            .unwrap();
        sync(&s, &id, false);
        assert_eq!(members(&s), HashSet::from([ada_id.clone()]));
        drop(admin);

        // Delegated sign-in: the upstream password opens the portal; a wrong one does not,
        // and counts like any other failure.
        let mut b = Browser::new(&s.base);
        assert_eq!(b.login("ada", "pw-ada-upstream").0, "/portal/profile");
        let mut b = Browser::new(&s.base);
        assert_ne!(b.login("ada", "wrong password").0, "/portal/profile");
        assert_eq!(user(&s, "ada")["badLoginAttempts"], 1, "{}", user(&s, "ada"));
        // An empty password is never sent upstream (it would be an anonymous bind).
        let mut b = Browser::new(&s.base);
        assert_ne!(b.login("ada", "").0, "/portal/profile");
        let failures = user(&s, "ada")["badLoginAttempts"].as_i64().unwrap();

        // A local user, to show the rest is unaffected when the upstream is down.
        let (st, _) = s.post(
            "/api/systemusers",
            json!({"username": "local", "email": "local@x.example", "password": "a local password 1"}),
        );
        assert_eq!(st, 200);

        // The Actions menu hands chosen users to a connection: a Cairn user delegated to it
        // signs in with the upstream password (found by an escaped search: no link yet), and
        // an external authority forbids password changes in Cairn.
        let (st, dave) = s.post("/api/systemusers", json!({"username": "dave", "email": "dave@x.example"}));
        assert_eq!(st, 200, "{dave}");
        let dave_id = dave["_id"].as_str().unwrap();
        up.add_person("dave", &[("userPassword", "pw-dave-upstream")]);
        let (st, r) = s.post(
            "/api/v2/users/actions",
            json!({"action": "set_delegated_authority", "connection": id, "user_ids": [dave_id]}),
        );
        assert_eq!(st, 200, "{r}");
        assert_eq!(r["results"][0]["outcome"], "done", "{r}");
        let mut b = Browser::new(&s.base);
        assert_eq!(b.login("dave", "pw-dave-upstream").0, "/portal/profile");
        let (st, r) = s.post(
            "/api/v2/users/actions",
            json!({"action": "set_delegated_authority", "connection": "000000000000000000000000", "user_ids": [dave_id]}),
        );
        assert_eq!(st, 200, "{r}");
        assert_eq!(r["results"][0]["outcome"], "error", "an unknown connection: {r}");
        let local_id =
            s.get("/api/systemusers?filter=username:$eq:local").1["results"][0]["_id"].as_str().unwrap().to_string();
        let (st, r) = s.post(
            "/api/v2/users/actions",
            json!({"action": "set_password_authority", "connection": id, "user_ids": [local_id]}),
        );
        assert_eq!((st, r["results"][0]["outcome"].as_str()), (200, Some("done")), "{r}");
        let (st, e) = s.put(&format!("/api/systemusers/{local_id}"), json!({"password": "another local password 2"}));
        assert_eq!(st, 409, "{e}");

        // Upstream down: refused, with an event that says so; the failure is not counted.
        up.stop();
        let t = Instant::now();
        let mut b = Browser::new(&s.base);
        assert_ne!(b.login("ada", "pw-ada-upstream").0, "/portal/profile");
        assert!(t.elapsed() < Duration::from_secs(20), "refused within the timeout");
        let (_, ev) = s.get(&format!("/api/v2/events?user_id={ada_id}&action=login_failure&limit=100"));
        let ev = if ev.is_array() { ev } else { ev["results"].clone() };
        assert!(
            ev.as_array().unwrap().iter().any(|e| e["detail"]["reason"].as_str().unwrap_or("").contains("unavailable")),
            "{ev}"
        );
        assert_eq!(user(&s, "ada")["badLoginAttempts"], failures, "an unreachable upstream is no guess");
        let mut b = Browser::new(&s.base);
        assert_eq!(b.login("local", "a local password 1").0, "/portal/profile", "local users are unaffected");
        // A sync with the upstream down fails clearly and changes nothing.
        let j = sync(&s, &id, false);
        assert_eq!(j["status"], "failed", "{j}");
        assert!(j["message"].as_str().unwrap().contains("connect"), "{j}");
        assert_eq!(user(&s, "ada")["state"], "ACTIVATED");

        // Back up: the breaker lets an attempt through again once its pause ends (or at once
        // when it never opened).
        up.start();
        let t = Instant::now();
        loop {
            let mut b = Browser::new(&s.base);
            if b.login("ada", "pw-ada-upstream").0 == "/portal/profile" {
                break;
            }
            assert!(t.elapsed() < Duration::from_secs(60), "delegated sign-in did not recover");
            std::thread::sleep(Duration::from_secs(2));
        }
        drop(s);
    }
}

/// The upstream over TLS (a slapd with a CA made here): ldaps:// and StartTLS with the CA,
/// ldaps:// pinned by fingerprint, and delegated sign-in over ldaps:// work; a wrong
/// fingerprint, another CA or the system's CAs fail the sync clearly and change nothing, and
/// a delegated sign-in the upstream's certificate fails is refused without counting as a guess.
#[test]
fn a_new_user_whose_manager_cannot_be_created_comes_without_one() {
    for db in Db::all("dirsync_manager") {
        let tmp = tempfile::tempdir().unwrap();
        let Some(up) = slapd(&tmp.path().join("slapd"), None) else { return };
        let s = Server::start(&db);
        // A Cairn user, not from the directory, holds the username of bob's manager upstream.
        let (st, local) = s.post("/api/systemusers", json!({"username": "ada", "email": "ada.local@example.org"}));
        assert_eq!(st, 200, "{local}");
        let (st, c) = s.post("/api/v2/directories", connection_body(&up.url()));
        assert_eq!(st, 201, "{c}");
        let id = c["id"].as_str().unwrap().to_string();
        let j = sync(&s, &id, false);
        assert_eq!(j["status"], "done", "{j}");
        assert_eq!((j["counts"]["created"].as_i64(), j["counts"]["error"].as_i64()), (Some(2), Some(1)), "{j}");
        let (_, results) =
            s.get(&format!("/api/v2/directories/{id}/sync/{}/results?limit=100", j["jobId"].as_str().unwrap()));
        let of = |name: &str| results.as_array().unwrap().iter().find(|r| r["username"] == name).cloned().unwrap();
        assert_eq!(of("ada")["outcome"], "error", "{results}");
        assert!(of("ada")["message"].as_str().unwrap().contains("ada"), "says who holds it: {results}");
        let bob = of("bob");
        assert_eq!(bob["outcome"], "created", "{results}");
        assert!(bob["message"].as_str().unwrap().contains("manager uid=ada"), "says why: {results}");
        // Nobody points at a user that does not exist; the local user is untouched.
        assert!(user(&s, "bob")["manager"].as_str().unwrap_or("").is_empty(), "{}", user(&s, "bob"));
        let ada = user(&s, "ada");
        assert_eq!((ada["_id"].clone(), ada["email"].clone()), (local["_id"].clone(), json!("ada.local@example.org")));
        assert_eq!(user(&s, "carol")["state"], "SUSPENDED");

        // An entry naming itself as its manager, met by a later sync beside unchanged users:
        // created, pointing at nobody, and the result says why.
        let erin_dn = format!("uid=erin,ou=people,{BASE}");
        up.add_person("erin", &[("mail", "erin@example.org"), ("manager", &erin_dn)]);
        let j = sync(&s, &id, false);
        assert_eq!(j["status"], "done", "{j}");
        assert_eq!(j["counts"]["created"], 1, "{j}");
        let erin = user(&s, "erin");
        assert!(erin["manager"].as_str().unwrap_or("").is_empty(), "{erin}");
        let (_, results) =
            s.get(&format!("/api/v2/directories/{id}/sync/{}/results?limit=100", j["jobId"].as_str().unwrap()));
        let erin_results: Vec<&Value> = results
            .as_array()
            .unwrap()
            .iter()
            .filter(|r| r["userId"] == erin["_id"] || r["username"] == "erin")
            .collect();
        assert!(
            erin_results.iter().any(|r| r["outcome"] == "error" && r["message"].as_str().unwrap().contains("manager")),
            "{results}"
        );
        drop(s);
    }
}

#[test]
fn directory_over_tls_checks_the_upstream_certificate() {
    let pki = pki();
    for db in Db::all("dirsync_tls") {
        let tmp = tempfile::tempdir().unwrap();
        let Some(up) = slapd(&tmp.path().join("slapd"), Some(&pki)) else { return };
        let s = Server::start(&db);

        // ldaps:// trusting the CA: imported.
        let mut body = connection_body(&up.ldaps_url());
        body["caCert"] = json!(pki.ca_pem);
        let (st, c) = s.post("/api/v2/directories", body);
        assert_eq!(st, 201, "{c}");
        let id = c["id"].as_str().unwrap().to_string();
        let j = sync(&s, &id, false);
        assert_eq!((j["status"].as_str(), j["counts"]["created"].as_i64()), (Some("done"), Some(3)), "{j}");
        let ada_id = user(&s, "ada")["_id"].as_str().unwrap().to_string();

        // Delegated sign-in binds over ldaps://: the upstream password opens the portal, a
        // wrong one does not.
        let mut b = Browser::new(&s.base);
        assert_eq!(b.login("ada", "pw-ada-upstream").0, "/portal/profile");
        let mut b = Browser::new(&s.base);
        assert_ne!(b.login("ada", "wrong password").0, "/portal/profile");
        assert_eq!(user(&s, "ada")["badLoginAttempts"], 1);

        // StartTLS on the ldap:// port with the same CA.
        let put = |b: Value| {
            let (st, c) = s.put(&format!("/api/v2/directories/{id}"), b);
            assert_eq!(st, 200, "{c}");
        };
        put(json!({"url": up.url(), "startTls": true}));
        let j = sync(&s, &id, false);
        assert_eq!((j["status"].as_str(), j["counts"]["unchanged"].as_i64()), (Some("done"), Some(3)), "{j}");
        let mut b = Browser::new(&s.base);
        assert_eq!(b.login("bob", "pw-bob-upstream").0, "/portal/profile", "a delegated bind over StartTLS");

        // ldaps:// pinned to the server certificate's SHA-256 (no CA needed).
        put(json!({"url": up.ldaps_url(), "startTls": false, "fingerprint": pki.fingerprint}));
        let (_, c) = s.get(&format!("/api/v2/directories/{id}"));
        assert!(c["caCert"].is_null(), "a fingerprint replaces the CA: {c}");
        let j = sync(&s, &id, false);
        assert_eq!(j["status"], "done", "{j}");

        // A change upstream that a failing sync must not bring in.
        let mut admin = up.admin();
        let bob_dn = format!("uid=bob,ou=people,{BASE}");
        admin
            .modify(&bob_dn, vec![Mod::Replace("mail", HashSet::from(["bob@tls.example.org"]))])
            .unwrap()
            .success()
            .unwrap();
        drop(admin);
        let users = count_users(&s);
        let unchanged = |s: &Server| {
            assert_eq!(count_users(s), users, "nobody created");
            assert_eq!(user(s, "bob")["email"], "bob@example.org", "nobody changed");
        };

        // A wrong fingerprint: the sync fails naming both fingerprints.
        let wrong = "ab".repeat(32);
        put(json!({"fingerprint": wrong}));
        let j = sync(&s, &id, false);
        assert_eq!(j["status"], "failed", "{j}");
        let m = j["message"].as_str().unwrap();
        assert!(m.contains("fingerprint") && m.contains(&pki.fingerprint) && m.contains(&wrong), "{j}");
        unchanged(&s);
        // A delegated sign-in it fails is refused, says why, and is no guess.
        let failures = user(&s, "ada")["badLoginAttempts"].clone();
        let mut b = Browser::new(&s.base);
        assert_ne!(b.login("ada", "pw-ada-upstream").0, "/portal/profile");
        let (_, ev) = s.get(&format!("/api/v2/events?user_id={ada_id}&action=login_failure&limit=100"));
        let ev = if ev.is_array() { ev } else { ev["results"].clone() };
        assert!(
            ev.as_array().unwrap().iter().any(|e| e["detail"]["reason"].as_str().unwrap_or("").contains("fingerprint")),
            "{ev}"
        );
        assert_eq!(user(&s, "ada")["badLoginAttempts"], failures);

        // A CA that did not sign the server's certificate.
        put(json!({"caCert": pki.other_ca_pem}));
        let j = sync(&s, &id, false);
        assert_eq!(j["status"], "failed", "{j}");
        let m = j["message"].as_str().unwrap();
        assert!(m.contains("certificate") && m.contains("caCert"), "{j}");
        unchanged(&s);

        // Neither: the system's CAs, which do not trust a private CA.
        put(json!({"caCert": null}));
        let (_, c) = s.get(&format!("/api/v2/directories/{id}"));
        assert!(c["caCert"].is_null() && c["fingerprint"].is_null(), "{c}");
        let j = sync(&s, &id, false);
        assert_eq!(j["status"], "failed", "{j}");
        let m = j["message"].as_str().unwrap();
        assert!(m.contains("certificate") && m.contains("not trusted"), "{j}");
        unchanged(&s);

        // The right CA again: the pending change arrives.
        put(json!({"caCert": pki.ca_pem}));
        let j = sync(&s, &id, false);
        assert_eq!((j["status"].as_str(), j["counts"]["updated"].as_i64()), (Some("done"), Some(1)), "{j}");
        assert_eq!(user(&s, "bob")["email"], "bob@tls.example.org");
        drop(s);
    }
}

#[test]
fn directory_api_refuses_bad_input_and_callers() {
    let db = Db::Sqlite;
    let s = Server::start(&db);
    let good = connection_body("ldap://127.0.0.1:1");
    // No key, a wrong key, a read-only key.
    let (st, _) = s.req("POST", "/api/v2/directories", None, Some(&good));
    assert_eq!(st, 401);
    let (st, _) = s.req("GET", "/api/v2/directories", Some("not-a-key"), None);
    assert_eq!(st, 401);
    let (_, k) = s.post("/api/v2/apikeys", json!({"name": "auditor", "role": "read-only"}));
    let ro = k["key"].as_str().unwrap().to_string();
    let (st, _) = s.req("POST", "/api/v2/directories", Some(&ro), Some(&good));
    assert_eq!(st, 403);
    let (st, _) = s.req("GET", "/api/v2/directories", Some(&ro), None);
    assert_eq!(st, 200, "read-only keys read");

    // Each bad field is named.
    for (field, v) in [
        ("url", json!("http://dc1.example")),
        ("url", json!("ldap://user:pw@dc1.example")),
        ("url", json!("ldap://dc1.example:70000")),
        ("userFilter", json!("(uid=*")),
        ("userFilter", json!(format!("({})", "a".repeat(10_000)))),
        ("bindDn", json!("not a dn")),
        ("preset", json!("novell")),
        ("passwordAuthority", json!("maybe")),
        ("syncIntervalSeconds", json!(1)),
        ("fingerprint", json!("zz")),
        ("caCert", json!("not pem")),
        ("attributeMapping", json!({"id": ""})),
        ("nonsense", json!(1)),
    ] {
        let mut b = good.clone();
        b[field] = v.clone();
        let (st, e) = s.post("/api/v2/directories", b);
        assert_eq!(st, 400, "{field}={v}: {e}");
        assert!(e.to_string().contains(field), "{field}: {e}");
    }
    let (st, e) = s.post("/api/v2/directories", json!({"name": "x"}));
    assert_eq!(st, 400);
    assert!(e.to_string().contains("userBase") && e.to_string().contains("url"), "{e}");
    let res = s
        .raw()
        .post(format!("{}/api/v2/directories", s.base))
        .header("x-api-key", KEY)
        .header("content-type", "application/json")
        .body("{not json")
        .send()
        .unwrap();
    assert_eq!(res.status().as_u16(), 400);
    // A CA certificate needs TLS.
    let mut b = good.clone();
    b["fingerprint"] = json!("ab".repeat(32));
    let (st, e) = s.post("/api/v2/directories", b);
    assert_eq!(st, 400, "{e}");

    // Names are unique; unknown ids are 404.
    let (st, c) = s.post("/api/v2/directories", good.clone());
    assert_eq!(st, 201, "{c}");
    let id = c["id"].as_str().unwrap().to_string();
    let (st, _) = s.post("/api/v2/directories", good.clone());
    assert_eq!(st, 409);
    assert_eq!(s.get("/api/v2/directories/000000000000000000000000").0, 404);
    assert_eq!(s.get("/api/v2/directories/../../etc").0, 404);
    let (st, _) = s.post("/api/v2/directories/000000000000000000000000/sync", json!({}));
    assert_eq!(st, 404);
    let (st, _) = s.post(&format!("/api/v2/directories/{id}/sync?dry_run=perhaps"), json!({}));
    assert_eq!(st, 400);

    // PUT changes what it names; a new password is accepted and never shown.
    let (st, c2) =
        s.put(&format!("/api/v2/directories/{id}"), json!({"bindPassword": "another", "syncIntervalSeconds": 3600}));
    assert_eq!(st, 200, "{c2}");
    assert_eq!(c2["syncIntervalSeconds"], 3600);
    assert!(!c2.to_string().contains("another"));

    // An upstream that accepts connections and never answers: the sync fails within the
    // timeouts, saying so.
    let hang = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = hang.local_addr().unwrap().port();
    let keep = std::thread::spawn(move || {
        let mut held = vec![];
        for c in hang.incoming().take(4) {
            held.push(c);
        }
        std::thread::sleep(Duration::from_secs(40));
    });
    let (st, _) = s.put(&format!("/api/v2/directories/{id}"), json!({"url": format!("ldap://127.0.0.1:{port}")}));
    assert_eq!(st, 200);
    let t = Instant::now();
    let j = sync(&s, &id, false);
    assert_eq!(j["status"], "failed", "{j}");
    assert!(j["message"].as_str().unwrap().contains("timed out"), "{j}");
    assert!(t.elapsed() < Duration::from_secs(30), "{:?}", t.elapsed());
    // Deleting the connection leaves the users; the connection is gone.
    let (st, _) = s.delete(&format!("/api/v2/directories/{id}"));
    assert_eq!(st, 200);
    assert_eq!(s.get(&format!("/api/v2/directories/{id}")).0, 404);
    drop(keep);
}

/// The admin portal's Directories page: connect (the password never shown back), preview,
/// sync now, the last sync's counts; a read-only admin sees and cannot change.
#[test]
fn admin_portal_connects_previews_and_syncs_a_directory() {
    let tmp = tempfile::tempdir().unwrap();
    let Some(up) = slapd(&tmp.path().join("slapd"), None) else { return };
    let s = Server::start(&Db::Sqlite);
    const PW: &str = "correct horse battery staple";
    for (email, role) in [("admin@example.com", "admin"), ("viewer@example.com", "read-only")] {
        let out =
            s.command().args(["admin", "create", "--email", email, "--password", PW, "--role", role]).output().unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    }
    let mut b = Browser::new(&s.base);
    b.get("/admin/login");
    let p = b.post("/admin/login", &[("email", "admin@example.com"), ("password", PW)]);
    b.follow(p);
    let page = b.get("/admin/directories");
    assert_eq!(page.status, 200);
    assert!(page.body.contains("No directory is connected"), "{}", page.body);
    let ub = format!("ou=people,{BASE}");
    let gb = format!("ou=groups,{BASE}");
    let url = up.url();
    let p = b.post(
        "/admin/directories",
        &[
            ("name", "corp"),
            ("url", &url),
            ("preset", "openldap"),
            ("bindDn", ROOT_DN),
            ("bindPassword", ROOT_PW),
            ("userBase", &ub),
            ("groupBase", &gb),
            ("passwordAuthority", "delegated"),
            ("syncIntervalSeconds", "0"),
            ("attributeMapping", r#"{"disabled": "employeeType"}"#),
        ],
    );
    let (at, page) = b.follow(p);
    assert!(at.starts_with("/admin/directories/"), "{at}: {}", page.body);
    assert!(page.body.contains("Never synced") && !page.body.contains(ROOT_PW), "{}", page.body);
    let p = b.post(&format!("{}/sync", at.split('?').next().unwrap()), &[("dry_run", "yes")]);
    let (at, _) = b.follow(p);
    let detail = at.split('?').next().unwrap().to_string();
    let t = Instant::now();
    loop {
        let page = b.get(&detail);
        if page.body.contains("<td>done</td>") {
            assert!(page.body.contains("(preview)") && page.body.contains("created 3"), "{}", page.body);
            break;
        }
        assert!(t.elapsed() < Duration::from_secs(30), "{}", page.body);
        std::thread::sleep(Duration::from_millis(200));
    }
    assert_eq!(count_users(&s), 0, "a preview creates nobody");
    b.post(&format!("{detail}/sync"), &[]);
    let t = Instant::now();
    while count_users(&s) < 3 {
        assert!(t.elapsed() < Duration::from_secs(30));
        std::thread::sleep(Duration::from_millis(200));
    }

    let mut ro = Browser::new(&s.base);
    ro.get("/admin/login");
    let p = ro.post("/admin/login", &[("email", "viewer@example.com"), ("password", PW)]);
    ro.follow(p);
    let page = ro.get(&detail);
    assert_eq!(page.status, 200);
    assert!(!page.body.contains("Sync now"), "read-only admins get no buttons");
    assert_eq!(ro.post(&format!("{detail}/sync"), &[]).status, 403);
    assert_eq!(ro.post(&format!("{detail}/delete"), &[]).status, 403);
}

/// A sync cut short by a crash (kill -9 mid-run) goes on by itself when the server starts
/// again, under the same job: every upstream user ends up created once, counted once, and a
/// later sync finds nothing to do.
#[test]
fn an_interrupted_sync_resumes_and_converges() {
    const EXTRA: usize = 30_000;
    let total = EXTRA as i64 + 3;
    for db in Db::all("dirsync_resume") {
        let tmp = tempfile::tempdir().unwrap();
        let Some(up) = slapd_with(&tmp.path().join("slapd"), None, EXTRA) else { return };
        // PostgreSQL leaves a job to other processes until it has been silent this long.
        let mut s = Server::start_with(&db, &[("CAIRN_BOOTSTRAP_API_KEY", KEY), ("CAIRN_STALE_JOB_SECONDS", "2")]);
        let mut body = connection_body(&up.url());
        body["passwordAuthority"] = json!("delegated");
        let (st, c) = s.post("/api/v2/directories", body);
        assert_eq!(st, 201, "{c}");
        let id = c["id"].as_str().unwrap().to_string();
        let (st, v) = s.post(&format!("/api/v2/directories/{id}/sync"), json!({}));
        assert_eq!(st, 202, "{v}");
        let job = v["jobId"].as_str().unwrap().to_string();
        let path = format!("/api/v2/directories/{id}/sync/{job}");
        // Killed once the first page is applied, well before the last.
        let t = Instant::now();
        let at_kill = loop {
            let (_, j) = s.get(&path);
            if j["processed"].as_i64().unwrap_or(0) > 0 {
                break j;
            }
            assert!(t.elapsed() < Duration::from_secs(60), "no progress: {j}");
            std::thread::sleep(Duration::from_millis(5));
        };
        s.kill();
        assert_eq!(at_kill["status"], "running", "{at_kill}");
        assert!(at_kill["processed"].as_i64().unwrap() < total, "killed mid-run: {at_kill}");
        std::thread::sleep(Duration::from_secs(3));
        s.launch();
        let t = Instant::now();
        let j = loop {
            let (st, j) = s.get(&path);
            assert_eq!(st, 200, "{j}");
            if matches!(j["status"].as_str(), Some("done" | "failed")) {
                break j;
            }
            assert!(t.elapsed() < Duration::from_secs(120), "the resumed sync did not end: {j}");
            std::thread::sleep(Duration::from_millis(5));
        };
        assert_eq!(j["status"], "done", "{j}");
        assert!(j["message"].as_str().unwrap_or("").contains("resumed"), "{j}");
        let counts = &j["counts"];
        assert_eq!(counts["error"], 0, "{j}");
        // A page created just before the kill whose results were not written yet is reported
        // as unchanged by the resumed run: each user once either way.
        assert_eq!(counts["created"].as_i64().unwrap() + counts["unchanged"].as_i64().unwrap(), total, "{j}");
        assert_eq!(count_users(&s), total, "nobody created twice or missed");
        let mut ids = HashSet::new();
        let mut skip = 0;
        loop {
            let (st, page) = s.get(&format!("{path}/results?limit=1000&skip={skip}"));
            assert_eq!(st, 200, "{page}");
            let page = page.as_array().unwrap().clone();
            if page.is_empty() {
                break;
            }
            skip += page.len();
            // A user created before the kill may be updated after it (its manager, set by
            // the second pass the first run never reached): created once is what counts.
            for r in page.iter().filter(|r| r["outcome"] == "created") {
                assert!(ids.insert(r["userId"].as_str().unwrap().to_string()), "created twice: {r}");
            }
        }
        // Results list what a sync did: each user it created, once.
        assert_eq!(ids.len() as i64, counts["created"].as_i64().unwrap(), "every user created is reported once");
        let again = sync(&s, &id, false);
        assert_eq!(again["counts"]["unchanged"], total, "converged: {again}");
        assert_eq!(again["counts"]["created"], 0, "{again}");
    }
}
