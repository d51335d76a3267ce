-- JumpCloud's graph (§2.2 Association): a user or user group (from) is associated with a
-- resource (to); a user reaches a resource only through one, directly or through a group.
-- Both ends are typed ids (`user`, `user_group`; `ldap_server`, `radius_server`,
-- `application`), so no foreign key can hold them: deleting a user or a group deletes its
-- rows in the same transaction (Db::delete_user, Db::delete_group).
-- The key serves the subject's side (lists of a user's or group's resources, and the direct
-- grant); the second index the resource's side.
CREATE TABLE associations (
    from_type TEXT COLLATE "C" NOT NULL,
    from_id TEXT COLLATE "C" NOT NULL,
    to_type TEXT COLLATE "C" NOT NULL,
    to_id TEXT COLLATE "C" NOT NULL,
    created TEXT COLLATE "C" NOT NULL,
    PRIMARY KEY (from_type, from_id, to_type, to_id)
);
CREATE INDEX associations_to_ix ON associations (to_type, to_id, from_type, from_id);

-- The one built-in LDAP server (§2.2), a resource of the graph; created with the organization.
CREATE TABLE ldap_servers (
    id TEXT COLLATE "C" PRIMARY KEY,
    name TEXT COLLATE "C" NOT NULL,
    user_lockout_action TEXT COLLATE "C" NOT NULL,
    user_password_expiration_action TEXT COLLATE "C" NOT NULL,
    created TEXT COLLATE "C" NOT NULL
);
