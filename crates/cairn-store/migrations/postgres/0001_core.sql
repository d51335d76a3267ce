-- Times are UTC RFC 3339 text with milliseconds ("2026-11-26T21:28:43.123Z"): fixed width,
-- so text order is time order on both databases.
CREATE TABLE organization (
    id TEXT COLLATE "C" PRIMARY KEY,
    name TEXT COLLATE "C" NOT NULL,
    settings TEXT COLLATE "C" NOT NULL,
    created TEXT COLLATE "C" NOT NULL
);

CREATE TABLE users (
    id TEXT COLLATE "C" PRIMARY KEY,
    username TEXT COLLATE "C" NOT NULL,
    email TEXT COLLATE "C" NOT NULL,
    state TEXT COLLATE "C" NOT NULL,
    created TEXT COLLATE "C" NOT NULL,
    updated TEXT COLLATE "C" NOT NULL,
    creationsource TEXT COLLATE "C" NOT NULL,
    password_hash TEXT COLLATE "C",
    password_expired BOOLEAN NOT NULL DEFAULT FALSE,
    password_date TEXT COLLATE "C",
    account_locked BOOLEAN NOT NULL DEFAULT FALSE,
    account_locked_date TEXT COLLATE "C",
    badloginattempts BIGINT NOT NULL DEFAULT 0,
    totp_enabled BOOLEAN NOT NULL DEFAULT FALSE,
    alternateemail TEXT COLLATE "C",
    firstname TEXT COLLATE "C",
    middlename TEXT COLLATE "C",
    lastname TEXT COLLATE "C",
    displayname TEXT COLLATE "C",
    employeeidentifier TEXT COLLATE "C",
    jobtitle TEXT COLLATE "C",
    department TEXT COLLATE "C",
    company TEXT COLLATE "C",
    costcenter TEXT COLLATE "C",
    employeetype TEXT COLLATE "C",
    location TEXT COLLATE "C",
    description TEXT COLLATE "C",
    manager TEXT COLLATE "C",
    external_dn TEXT COLLATE "C",
    external_source_type TEXT COLLATE "C",
    managedappleid TEXT COLLATE "C",
    public_key TEXT COLLATE "C",
    external_password_expiration_date TEXT COLLATE "C",
    sudo BOOLEAN NOT NULL DEFAULT FALSE,
    passwordless_sudo BOOLEAN NOT NULL DEFAULT FALSE,
    allow_public_key BOOLEAN NOT NULL DEFAULT FALSE,
    enable_managed_uid BOOLEAN NOT NULL DEFAULT FALSE,
    enable_user_portal_multifactor BOOLEAN NOT NULL DEFAULT FALSE,
    ldap_binding_user BOOLEAN NOT NULL DEFAULT FALSE,
    samba_service_user BOOLEAN NOT NULL DEFAULT FALSE,
    disabledevicemaxloginattempts BOOLEAN NOT NULL DEFAULT FALSE,
    password_never_expires BOOLEAN NOT NULL DEFAULT FALSE,
    unix_uid BIGINT,
    unix_guid BIGINT,
    addresses TEXT COLLATE "C",
    phonenumbers TEXT COLLATE "C",
    attributes TEXT COLLATE "C",
    relationships TEXT COLLATE "C",
    recoveryemail TEXT COLLATE "C",
    restrictedfields TEXT COLLATE "C",
    delegatedauthority TEXT COLLATE "C",
    externally_managed TEXT COLLATE "C",
    mfa TEXT COLLATE "C",
    ssh_keys TEXT COLLATE "C"
);
CREATE UNIQUE INDEX users_username_uq ON users (username);
CREATE UNIQUE INDEX users_email_uq ON users (email);
CREATE UNIQUE INDEX users_employeeidentifier_uq ON users (employeeidentifier);
CREATE INDEX users_state_ix ON users (state NULLS FIRST, id);
CREATE INDEX users_department_ix ON users (department NULLS FIRST, id);
CREATE INDEX users_lastname_ix ON users (lastname NULLS FIRST, id);
CREATE INDEX users_firstname_ix ON users (firstname NULLS FIRST, id);
CREATE INDEX users_manager_ix ON users (manager);

CREATE TABLE usergroups (
    id TEXT COLLATE "C" PRIMARY KEY,
    name TEXT COLLATE "C" NOT NULL,
    name_key TEXT COLLATE "C" NOT NULL,
    description TEXT COLLATE "C",
    email TEXT COLLATE "C",
    attributes TEXT COLLATE "C",
    membership_method TEXT COLLATE "C",
    unix_gid BIGINT,
    created TEXT COLLATE "C" NOT NULL,
    updated TEXT COLLATE "C" NOT NULL
);
CREATE UNIQUE INDEX usergroups_name_uq ON usergroups (name_key);

CREATE TABLE group_members (
    group_id TEXT COLLATE "C" NOT NULL REFERENCES usergroups (id) ON DELETE CASCADE,
    user_id TEXT COLLATE "C" NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    added TEXT COLLATE "C" NOT NULL,
    PRIMARY KEY (group_id, user_id)
);
CREATE INDEX group_members_user_ix ON group_members (user_id);

CREATE TABLE events (
    id TEXT COLLATE "C" PRIMARY KEY,
    time TEXT COLLATE "C" NOT NULL,
    actor_kind TEXT COLLATE "C" NOT NULL,
    actor_id TEXT COLLATE "C",
    actor_name TEXT COLLATE "C",
    action TEXT COLLATE "C" NOT NULL,
    target_kind TEXT COLLATE "C",
    target_id TEXT COLLATE "C",
    target_name TEXT COLLATE "C",
    source TEXT COLLATE "C" NOT NULL,
    client_addr TEXT COLLATE "C",
    outcome TEXT COLLATE "C" NOT NULL,
    changes TEXT COLLATE "C",
    detail TEXT COLLATE "C"
);
CREATE INDEX events_target_ix ON events (target_id, id);
CREATE INDEX events_action_ix ON events (action, id);
CREATE INDEX events_time_ix ON events (time);

CREATE TABLE apikeys (
    id TEXT COLLATE "C" PRIMARY KEY,
    name TEXT COLLATE "C" NOT NULL,
    role TEXT COLLATE "C" NOT NULL,
    key_hash TEXT COLLATE "C" NOT NULL,
    prefix TEXT COLLATE "C" NOT NULL,
    created TEXT COLLATE "C" NOT NULL,
    created_by TEXT COLLATE "C",
    last_used TEXT COLLATE "C"
);
CREATE UNIQUE INDEX apikeys_hash_uq ON apikeys (key_hash);

CREATE TABLE admins (
    id TEXT COLLATE "C" PRIMARY KEY,
    email TEXT COLLATE "C" NOT NULL,
    password_hash TEXT COLLATE "C" NOT NULL,
    role TEXT COLLATE "C" NOT NULL,
    created TEXT COLLATE "C" NOT NULL,
    updated TEXT COLLATE "C" NOT NULL
);
CREATE UNIQUE INDEX admins_email_uq ON admins (email);
