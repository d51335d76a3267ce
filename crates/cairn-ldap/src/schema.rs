//! The RootDSE (RFC 4512 §5.1) and the subschema entry (§4.2) that `ldapsearch -s base -b
//! cn=subschema` and Apache Directory Studio read: the standard definitions of the attribute
//! types and object classes the tree holds.

use crate::entry::{Syntax, ATTRS, SUBSCHEMA_DN};

pub const OID_PAGED: &str = "1.2.840.113556.1.4.319";
pub const OID_WHOAMI: &str = "1.3.6.1.4.1.4203.1.11.3";
pub const OID_PASSWD: &str = "1.3.6.1.4.1.4203.1.11.1";
pub const OID_STARTTLS: &str = "1.3.6.1.4.1.1466.20037";

/// The RootDSE's attributes.
pub fn root_dse(base: &str, starttls: bool) -> Vec<(&'static str, Vec<String>)> {
    let mut ext = vec![OID_WHOAMI.to_string(), OID_PASSWD.to_string()];
    if starttls {
        ext.push(OID_STARTTLS.to_string());
    }
    vec![
        ("objectClass", vec!["top".into()]),
        ("namingContexts", vec![base.to_string()]),
        ("supportedLDAPVersion", vec!["3".into()]),
        ("supportedControl", vec![OID_PAGED.into()]),
        ("supportedExtension", ext),
        ("supportedFeatures", vec!["1.3.6.1.4.1.4203.1.5.1".into(), "1.3.6.1.4.1.4203.1.5.3".into()]),
        ("subschemaSubentry", vec![SUBSCHEMA_DN.into()]),
        ("vendorName", vec!["Cairn".into()]),
        ("vendorVersion", vec![format!("Cairn {}", env!("CARGO_PKG_VERSION"))]),
    ]
}

fn syntax_oid(s: Syntax, name: &str) -> &'static str {
    match (s, name) {
        (Syntax::Int, _) => "1.3.6.1.4.1.1466.115.121.1.27",
        (Syntax::Dn, _) => "1.3.6.1.4.1.1466.115.121.1.12",
        (Syntax::Time, _) => "1.3.6.1.4.1.1466.115.121.1.24",
        (_, "objectClass" | "structuralObjectClass") => "1.3.6.1.4.1.1466.115.121.1.38",
        (_, "mail" | "dc" | "homeDirectory" | "loginShell" | "memberUid" | "gecos") => "1.3.6.1.4.1.1466.115.121.1.26",
        (_, "telephoneNumber" | "mobile") => "1.3.6.1.4.1.1466.115.121.1.50",
        (_, "sshPublicKey") => "1.3.6.1.4.1.1466.115.121.1.40",
        (_, "entryUUID") => "1.3.6.1.1.16.1",
        (_, "hasSubordinates") => "1.3.6.1.4.1.1466.115.121.1.7",
        _ => "1.3.6.1.4.1.1466.115.121.1.15",
    }
}

fn equality(s: Syntax, name: &str) -> &'static str {
    match (s, name) {
        (Syntax::Int, _) => "integerMatch",
        (Syntax::Dn, _) => "distinguishedNameMatch",
        (Syntax::Time, _) => "generalizedTimeMatch",
        (_, "objectClass" | "structuralObjectClass") => "objectIdentifierMatch",
        (_, "entryUUID") => "UUIDMatch",
        (_, "hasSubordinates") => "booleanMatch",
        (_, "telephoneNumber" | "mobile") => "telephoneNumberMatch",
        (_, "mail" | "dc") => "caseIgnoreIA5Match",
        (_, "homeDirectory" | "memberUid" | "loginShell") => "caseExactIA5Match",
        (_, "sshPublicKey") => "octetStringMatch",
        (Syntax::Exact, _) => "caseExactMatch",
        _ => "caseIgnoreMatch",
    }
}

/// `attributeTypes` values (RFC 4512 §4.1.2).
pub fn attribute_types() -> Vec<String> {
    ATTRS
        .iter()
        .map(|d| {
            let names = if d.aliases.is_empty() {
                format!("'{}'", d.name)
            } else {
                let all: Vec<String> =
                    std::iter::once(d.name).chain(d.aliases.iter().copied()).map(|n| format!("'{n}'")).collect();
                format!("( {} )", all.join(" "))
            };
            let mut s = format!(
                "( {} NAME {names} EQUALITY {} SYNTAX {}",
                d.oid,
                equality(d.syntax, d.name),
                syntax_oid(d.syntax, d.name)
            );
            if d.single {
                s.push_str(" SINGLE-VALUE");
            }
            if d.operational {
                s.push_str(" NO-USER-MODIFICATION USAGE directoryOperation");
            }
            s.push_str(" )");
            s
        })
        .collect()
}

/// `objectClasses` values (RFC 4512 §4.1.1): the standard classes of the tree's entries.
pub fn object_classes() -> Vec<String> {
    [
        "( 2.5.6.0 NAME 'top' ABSTRACT MUST objectClass )",
        "( 2.5.6.6 NAME 'person' SUP top STRUCTURAL MUST ( sn $ cn ) MAY ( telephoneNumber $ description ) )",
        "( 2.5.6.7 NAME 'organizationalPerson' SUP person STRUCTURAL MAY ( title $ ou $ l $ telephoneNumber ) )",
        "( 2.16.840.1.113730.3.2.2 NAME 'inetOrgPerson' SUP organizationalPerson STRUCTURAL MAY ( departmentNumber $ displayName $ employeeNumber $ employeeType $ givenName $ mail $ manager $ mobile $ o $ uid ) )",
        "( 1.3.6.1.1.1.2.0 NAME 'posixAccount' SUP top AUXILIARY MUST ( cn $ uid $ uidNumber $ gidNumber $ homeDirectory ) MAY ( loginShell $ gecos $ description ) )",
        "( 1.3.6.1.4.1.24552.500.1.1.2.0 NAME 'ldapPublicKey' SUP top AUXILIARY MUST uid MAY sshPublicKey )",
        "( 2.5.6.9 NAME 'groupOfNames' SUP top STRUCTURAL MUST cn MAY ( member $ description $ o $ ou ) )",
        "( 1.3.6.1.1.1.2.2 NAME 'posixGroup' SUP top AUXILIARY MUST ( cn $ gidNumber ) MAY ( memberUid $ description ) )",
        "( 2.5.6.5 NAME 'organizationalUnit' SUP top STRUCTURAL MUST ou MAY description )",
        "( 0.9.2342.19200300.100.4.13 NAME 'domain' SUP top STRUCTURAL MUST dc MAY ( description $ o $ l ) )",
        "( 2.5.17.0 NAME 'subentry' SUP top STRUCTURAL MUST cn )",
        "( 2.5.20.1 NAME 'subschema' AUXILIARY MAY ( ldapSyntaxes $ matchingRules $ attributeTypes $ objectClasses ) )",
        "( 2.16.840.1.113730.3.2.33 NAME 'nsAccount' SUP top AUXILIARY MAY nsAccountLock )",
        "( 1.2.840.113556.1.5.9 NAME 'memberOfHolder' SUP top AUXILIARY MAY memberOf )",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect()
}

pub fn ldap_syntaxes() -> Vec<String> {
    [
        ("1.3.6.1.4.1.1466.115.121.1.7", "Boolean"),
        ("1.3.6.1.4.1.1466.115.121.1.12", "DN"),
        ("1.3.6.1.4.1.1466.115.121.1.15", "Directory String"),
        ("1.3.6.1.4.1.1466.115.121.1.24", "Generalized Time"),
        ("1.3.6.1.4.1.1466.115.121.1.26", "IA5 String"),
        ("1.3.6.1.4.1.1466.115.121.1.27", "INTEGER"),
        ("1.3.6.1.4.1.1466.115.121.1.38", "OID"),
        ("1.3.6.1.4.1.1466.115.121.1.40", "Octet String"),
        ("1.3.6.1.4.1.1466.115.121.1.50", "Telephone Number"),
        ("1.3.6.1.1.16.1", "UUID"),
    ]
    .iter()
    .map(|(oid, d)| format!("( {oid} DESC '{d}' )"))
    .collect()
}

pub fn matching_rules() -> Vec<String> {
    [
        ("2.5.13.0", "objectIdentifierMatch", "1.3.6.1.4.1.1466.115.121.1.38"),
        ("2.5.13.1", "distinguishedNameMatch", "1.3.6.1.4.1.1466.115.121.1.12"),
        ("2.5.13.2", "caseIgnoreMatch", "1.3.6.1.4.1.1466.115.121.1.15"),
        ("2.5.13.5", "caseExactMatch", "1.3.6.1.4.1.1466.115.121.1.15"),
        ("2.5.13.13", "booleanMatch", "1.3.6.1.4.1.1466.115.121.1.7"),
        ("2.5.13.14", "integerMatch", "1.3.6.1.4.1.1466.115.121.1.27"),
        ("2.5.13.17", "octetStringMatch", "1.3.6.1.4.1.1466.115.121.1.40"),
        ("2.5.13.20", "telephoneNumberMatch", "1.3.6.1.4.1.1466.115.121.1.50"),
        ("2.5.13.27", "generalizedTimeMatch", "1.3.6.1.4.1.1466.115.121.1.24"),
        ("1.3.6.1.4.1.1466.109.114.1", "caseExactIA5Match", "1.3.6.1.4.1.1466.115.121.1.26"),
        ("1.3.6.1.4.1.1466.109.114.2", "caseIgnoreIA5Match", "1.3.6.1.4.1.1466.115.121.1.26"),
        ("1.3.6.1.1.16.2", "UUIDMatch", "1.3.6.1.1.16.1"),
    ]
    .iter()
    .map(|(oid, n, syn)| format!("( {oid} NAME '{n}' SYNTAX {syn} )"))
    .collect()
}

/// The subschema entry's attributes.
pub fn subschema() -> Vec<(&'static str, Vec<String>)> {
    vec![
        ("objectClass", vec!["top".into(), "subentry".into(), "subschema".into()]),
        ("cn", vec!["Subschema".into()]),
        ("ldapSyntaxes", ldap_syntaxes()),
        ("matchingRules", matching_rules()),
        ("attributeTypes", attribute_types()),
        ("objectClasses", object_classes()),
        ("createTimestamp", vec!["20260101000000Z".into()]),
        ("modifyTimestamp", vec!["20260101000000Z".into()]),
    ]
}
