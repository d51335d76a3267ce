//! Grants as JumpCloud's v2 graph (§2.2 Association): a user or a user group (the subject) is
//! associated with a resource (the LDAP server, a RADIUS server, an application), and a user
//! reaches a resource only through such an association, directly or through a group.
//!
//! The graph is read from both ends: `/users/{id}/associations` and
//! `/usergroups/{id}/associations` name resources, `/ldapservers/{id}/associations` (and, with
//! their issues, the RADIUS servers' and applications') name subjects. Both ends share the
//! parsing here; only the set of types on the far side differs ([`GraphKind`]).

use serde_json::Value;

use crate::error::{DomainError, FieldError};
use crate::id::is_object_id;

/// The kinds at one end of an association, by their JumpCloud graph type names.
pub trait GraphKind: Copy + Eq + std::fmt::Debug + Sized + 'static {
    const ALL: &'static [Self];
    /// The other types JumpCloud's graph has on this side, which Cairn has no objects of:
    /// accepted where JumpCloud accepts them (a list of them is empty; an operation on one
    /// names an object that is not here).
    const FOREIGN: &'static [&'static str] = &[];
    /// The JumpCloud type name (`ldap_server`, `user_group`, …), also the stored form.
    fn as_str(self) -> &'static str;
    /// For messages: "LDAP server", "user group".
    fn label(self) -> &'static str;
    fn parse(s: &str) -> Option<Self> {
        Self::ALL.iter().copied().find(|k| k.as_str() == s)
    }
}

/// What can be granted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ResourceKind {
    LdapServer,
    RadiusServer,
    Application,
}

impl GraphKind for ResourceKind {
    const ALL: &'static [ResourceKind] =
        &[ResourceKind::LdapServer, ResourceKind::RadiusServer, ResourceKind::Application];
    /// The rest of JumpCloud's targets of a user or user group (`GraphOperation-User`).
    const FOREIGN: &'static [&'static str] = &[
        "active_directory",
        "g_suite",
        "idp_routing_policy",
        "office_365",
        "password_manager_item",
        "system",
        "system_group",
    ];
    fn as_str(self) -> &'static str {
        match self {
            ResourceKind::LdapServer => "ldap_server",
            ResourceKind::RadiusServer => "radius_server",
            ResourceKind::Application => "application",
        }
    }
    fn label(self) -> &'static str {
        match self {
            ResourceKind::LdapServer => "LDAP server",
            ResourceKind::RadiusServer => "RADIUS server",
            ResourceKind::Application => "application",
        }
    }
}

/// Who is granted something.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SubjectKind {
    User,
    UserGroup,
}

impl GraphKind for SubjectKind {
    const ALL: &'static [SubjectKind] = &[SubjectKind::User, SubjectKind::UserGroup];
    fn as_str(self) -> &'static str {
        match self {
            SubjectKind::User => "user",
            SubjectKind::UserGroup => "user_group",
        }
    }
    fn label(self) -> &'static str {
        match self {
            SubjectKind::User => "user",
            SubjectKind::UserGroup => "user group",
        }
    }
}

/// One end of an association: JumpCloud's `GraphObject {type, id}`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Node<K> {
    pub kind: K,
    pub id: String,
}

pub type ResourceRef = Node<ResourceKind>;
pub type SubjectRef = Node<SubjectKind>;

impl<K: GraphKind> Node<K> {
    pub fn new(kind: K, id: impl Into<String>) -> Node<K> {
        Node { kind, id: id.into() }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GraphOp {
    Add,
    Remove,
}

/// A validated `GraphOperation` body: `{op, type, id, attributes?}`, naming the far end.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GraphOperation<K> {
    pub op: GraphOp,
    pub target: Node<K>,
}

/// What a valid `GraphOperation` names: an object of a kind Cairn has, or one of a JumpCloud
/// type Cairn has none of (`GraphKind::FOREIGN`), which therefore is not here (a 404).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Operation<K> {
    Cairn(GraphOperation<K>),
    Foreign { op: GraphOp, type_name: &'static str, id: String },
}

/// Graph types JumpCloud has that are no target on this side at all (a user is never
/// associated with a command): refused as such, not as if they were typos.
const JUMPCLOUD_ONLY: &[&str] = &["command", "policy", "policy_group"];

/// Longest piece of a refused value quoted back in a message.
const QUOTE_MAX: usize = 64;

fn quoted(s: &str) -> String {
    let mut q: String = s.chars().take(QUOTE_MAX).collect();
    if q.len() < s.len() {
        q.push('…');
    }
    format!("'{q}'")
}

fn supported<K: GraphKind>() -> String {
    K::ALL.iter().map(|k| k.as_str()).chain(K::FOREIGN.iter().copied()).collect::<Vec<_>>().join(", ")
}

/// Which JumpCloud type of this side Cairn has no objects of `s` is.
fn foreign<K: GraphKind>(s: &str) -> Option<&'static str> {
    K::FOREIGN.iter().copied().find(|f| *f == s)
}

fn parse_kind<K: GraphKind>(field: &str, s: &str) -> Result<K, FieldError> {
    K::parse(s).ok_or_else(|| {
        let why = if JUMPCLOUD_ONLY.contains(&s) {
            "is a JumpCloud type that cannot be associated here"
        } else if s.is_empty() {
            "is not a type"
        } else {
            "is not a type that can be associated here"
        };
        FieldError::new(field, format!("{} {why}; supported: {}", quoted(s), supported::<K>()))
    })
}

/// The `targets` query of an association list: one or more types of the far end, repeated
/// (`targets=user&targets=user_group`) or comma-separated. JumpCloud requires it, and so does
/// Cairn: a list must say which kind of association it asks for. Every type JumpCloud
/// defines for this side is accepted; those Cairn has no objects of add nothing to the list.
pub fn parse_targets<K: GraphKind>(values: &[&str]) -> Result<Vec<K>, DomainError> {
    if values.is_empty() {
        return Err(DomainError::field("targets", format!("is required: one or more of {}", supported::<K>())));
    }
    let mut kinds = Vec::new();
    for part in values.iter().flat_map(|v| v.split(',')) {
        if foreign::<K>(part.trim()).is_some() {
            continue;
        }
        let k = parse_kind::<K>("targets", part.trim()).map_err(|e| DomainError::Invalid(vec![e]))?;
        if !kinds.contains(&k) {
            kinds.push(k);
        }
    }
    Ok(kinds)
}

/// Unknown fields named in one answer, at most: a body of thousands of them gets a short one.
const UNKNOWN_FIELDS_MAX: usize = 10;

/// Parses a `GraphOperation` body whose `type` is of kind `K` (a resource when posted to a
/// user or group, a subject when posted to a resource). Every problem is named by its field.
pub fn parse_operation<K: GraphKind>(body: &Value) -> Result<Operation<K>, DomainError> {
    let Some(obj) = body.as_object() else {
        return Err(DomainError::field("body", "must be a JSON object: {\"op\": \"add\", \"type\": …, \"id\": …}"));
    };
    let mut errors = Vec::new();
    let op = match obj.get("op").map(|v| v.as_str()) {
        Some(Some("add")) => Some(GraphOp::Add),
        Some(Some("remove")) => Some(GraphOp::Remove),
        Some(Some("update")) => {
            errors.push(FieldError::new(
                "op",
                "'update' changes an association's attributes, and Cairn's associations have none: use \"add\" or \"remove\"",
            ));
            None
        }
        None => {
            errors.push(FieldError::new("op", "is required: \"add\" or \"remove\""));
            None
        }
        _ => {
            errors.push(FieldError::new("op", "must be \"add\" or \"remove\""));
            None
        }
    };
    let mut foreign_type = None;
    let kind = match obj.get("type").map(|v| v.as_str()) {
        Some(Some(t)) if foreign::<K>(t).is_some() => {
            foreign_type = foreign::<K>(t);
            None
        }
        Some(Some(t)) => parse_kind::<K>("type", t).map_err(|e| errors.push(e)).ok(),
        Some(None) => {
            errors.push(FieldError::new("type", format!("must be a string: one of {}", supported::<K>())));
            None
        }
        None => {
            errors.push(FieldError::new("type", format!("is required: one of {}", supported::<K>())));
            None
        }
    };
    let id = match obj.get("id").map(|v| v.as_str()) {
        Some(Some(id)) if is_object_id(id) => Some(id.to_string()),
        Some(Some(_)) | Some(None) => {
            errors.push(FieldError::new("id", "must be an object id: 24 lowercase hexadecimal characters"));
            None
        }
        None => {
            errors.push(FieldError::new("id", "is required: the id of the object to associate"));
            None
        }
    };
    match obj.get("attributes") {
        None | Some(Value::Null) => {}
        Some(Value::Object(a)) if a.is_empty() => {}
        Some(Value::Object(_)) => {
            errors.push(FieldError::new("attributes", "Cairn's associations have no attributes: leave it out or {}"))
        }
        Some(_) => errors.push(FieldError::new("attributes", "must be an object")),
    }
    for k in obj.keys().filter(|k| !matches!(k.as_str(), "op" | "type" | "id" | "attributes")).take(UNKNOWN_FIELDS_MAX)
    {
        let name: String = k.chars().take(QUOTE_MAX).collect();
        errors.push(FieldError::new(name, "is not a field of a graph operation (JumpCloud GraphOperation)"));
    }
    match (op, kind, foreign_type, id) {
        (Some(op), Some(kind), _, Some(id)) if errors.is_empty() => {
            Ok(Operation::Cairn(GraphOperation { op, target: Node { kind, id } }))
        }
        (Some(op), None, Some(type_name), Some(id)) if errors.is_empty() => {
            Ok(Operation::Foreign { op, type_name, id })
        }
        _ => Err(DomainError::Invalid(errors)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const ID: &str = "0123456789abcdef01234567";

    fn fields(e: DomainError) -> Vec<String> {
        match e {
            DomainError::Invalid(v) => v.into_iter().map(|f| f.field).collect(),
            other => panic!("{other:?}"),
        }
    }

    fn message(e: DomainError) -> String {
        e.to_string()
    }

    #[test]
    fn type_names_round_trip() {
        for k in ResourceKind::ALL {
            assert_eq!(ResourceKind::parse(k.as_str()), Some(*k));
        }
        for k in SubjectKind::ALL {
            assert_eq!(SubjectKind::parse(k.as_str()), Some(*k));
        }
        assert_eq!(ResourceKind::parse("user"), None, "a user is not a resource");
        assert_eq!(SubjectKind::parse("ldap_server"), None);
    }

    #[test]
    fn an_operation_names_the_far_end() {
        let op = parse_operation::<ResourceKind>(&json!({"op": "add", "type": "ldap_server", "id": ID})).unwrap();
        assert_eq!(
            op,
            Operation::Cairn(GraphOperation {
                op: GraphOp::Add,
                target: ResourceRef::new(ResourceKind::LdapServer, ID)
            })
        );
        let op =
            parse_operation::<SubjectKind>(&json!({"op": "remove", "type": "user_group", "id": ID, "attributes": {}}))
                .unwrap();
        assert_eq!(
            op,
            Operation::Cairn(GraphOperation {
                op: GraphOp::Remove,
                target: SubjectRef::new(SubjectKind::UserGroup, ID)
            })
        );
        // A JumpCloud type Cairn has no objects of names an object that is not here.
        let op = parse_operation::<ResourceKind>(&json!({"op": "add", "type": "system", "id": ID})).unwrap();
        assert_eq!(op, Operation::Foreign { op: GraphOp::Add, type_name: "system", id: ID.into() });
        // JumpCloud's own samples send `attributes: {}` or null.
        assert!(parse_operation::<ResourceKind>(
            &json!({"op": "add", "type": "application", "id": ID, "attributes": null})
        )
        .is_ok());
    }

    #[test]
    fn every_bad_field_is_named() {
        let e =
            parse_operation::<ResourceKind>(&json!({"op": "update", "type": "user", "id": "ABC", "x": 1})).unwrap_err();
        assert_eq!(fields(e), ["op", "type", "id", "x"]);
        let e = parse_operation::<ResourceKind>(&json!({})).unwrap_err();
        assert_eq!(fields(e), ["op", "type", "id"]);
        let e = parse_operation::<ResourceKind>(&json!({"op": 1, "type": 2, "id": 3, "attributes": []})).unwrap_err();
        assert_eq!(fields(e), ["op", "type", "id", "attributes"]);
        let e = parse_operation::<ResourceKind>(&json!({"op": "add", "type": "ldap_server", "id": ID,
                                                         "attributes": {"sudo": {"enabled": true}}}))
        .unwrap_err();
        assert_eq!(fields(e), ["attributes"]);
        for body in [json!([]), json!("add"), json!(null)] {
            assert_eq!(fields(parse_operation::<SubjectKind>(&body).unwrap_err()), ["body"]);
        }
        let nul = format!("{}\u{0}", &ID[..23]);
        assert_eq!(
            fields(parse_operation::<SubjectKind>(&json!({"op": "add", "type": "user", "id": nul})).unwrap_err()),
            ["id"]
        );
    }

    #[test]
    fn refused_types_are_named_with_the_supported_ones() {
        let m =
            message(parse_operation::<ResourceKind>(&json!({"op": "add", "type": "command", "id": ID})).unwrap_err());
        assert!(m.contains("'command' is a JumpCloud type that cannot be associated here"), "{m}");
        assert!(m.contains("ldap_server, radius_server, application, active_directory"), "{m}");
        let m = message(parse_operation::<SubjectKind>(&json!({"op": "add", "type": "system", "id": ID})).unwrap_err());
        assert!(m.contains("supported: user, user_group"), "{m}");
        let m = message(parse_targets::<SubjectKind>(&["ldap_server"]).unwrap_err());
        assert!(
            m.contains("'ldap_server' is not a type that can be associated here; supported: user, user_group"),
            "{m}"
        );
        let long = "x".repeat(10_000);
        let m = message(parse_targets::<SubjectKind>(&[&long]).unwrap_err());
        assert!(m.len() < 300, "a refused value is quoted short: {m}");
        let many: serde_json::Map<String, Value> = (0..1000).map(|i| (format!("f{i}"), json!(1))).collect();
        let e = parse_operation::<SubjectKind>(&Value::Object(many)).unwrap_err();
        assert_eq!(fields(e).len(), 3 + UNKNOWN_FIELDS_MAX);
    }

    #[test]
    fn targets_are_required_and_may_repeat() {
        assert_eq!(fields(parse_targets::<ResourceKind>(&[]).unwrap_err()), ["targets"]);
        assert_eq!(fields(parse_targets::<ResourceKind>(&[""]).unwrap_err()), ["targets"]);
        assert_eq!(parse_targets::<ResourceKind>(&["ldap_server"]).unwrap(), [ResourceKind::LdapServer]);
        assert_eq!(
            parse_targets::<SubjectKind>(&["user", "user_group,user"]).unwrap(),
            [SubjectKind::User, SubjectKind::UserGroup]
        );
        assert!(parse_targets::<ResourceKind>(&["ldap_server", "nope"]).is_err(), "one bad target refuses all");
        // Every type JumpCloud defines is a target; those Cairn has none of list nothing.
        assert_eq!(
            parse_targets::<ResourceKind>(&["system,g_suite", "ldap_server"]).unwrap(),
            [ResourceKind::LdapServer]
        );
        assert!(parse_targets::<ResourceKind>(&["office_365"]).unwrap().is_empty());
        assert!(parse_targets::<SubjectKind>(&["system"]).is_err(), "not a target of a resource");
    }
}
