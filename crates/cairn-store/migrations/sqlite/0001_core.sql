-- Booleans are INTEGER here: sqlx's Any driver cannot map SQLite's BOOLEAN declared type.
-- Times are UTC RFC 3339 text with milliseconds ("2026-11-26T21:28:43.123Z"): fixed width,
-- so text order is time order on both databases.
CREATE TABLE organization (
    id TEXT PRIMARY KEY,
    name TEXT NOT NULL,
    settings TEXT NOT NULL,
    created TEXT NOT NULL
);

CREATE TABLE users (
    id TEXT PRIMARY KEY,
    username TEXT NOT NULL,
    email TEXT NOT NULL,
    state TEXT NOT NULL,
    created TEXT NOT NULL,
    updated TEXT NOT NULL,
    creationsource TEXT NOT NULL,
    password_hash TEXT,
    password_expired INTEGER NOT NULL DEFAULT 0,
    password_date TEXT,
    account_locked INTEGER NOT NULL DEFAULT 0,
    account_locked_date TEXT,
    badloginattempts BIGINT NOT NULL DEFAULT 0,
    totp_enabled INTEGER NOT NULL DEFAULT 0,
    alternateemail TEXT,
    firstname TEXT,
    middlename TEXT,
    lastname TEXT,
    displayname TEXT,
    employeeidentifier TEXT,
    jobtitle TEXT,
    department TEXT,
    company TEXT,
    costcenter TEXT,
    employeetype TEXT,
    location TEXT,
    description TEXT,
    manager TEXT,
    external_dn TEXT,
    external_source_type TEXT,
    managedappleid TEXT,
    public_key TEXT,
    external_password_expiration_date TEXT,
    sudo INTEGER NOT NULL DEFAULT 0,
    passwordless_sudo INTEGER NOT NULL DEFAULT 0,
    allow_public_key INTEGER NOT NULL DEFAULT 0,
    enable_managed_uid INTEGER NOT NULL DEFAULT 0,
    enable_user_portal_multifactor INTEGER NOT NULL DEFAULT 0,
    ldap_binding_user INTEGER NOT NULL DEFAULT 0,
    samba_service_user INTEGER NOT NULL DEFAULT 0,
    disabledevicemaxloginattempts INTEGER NOT NULL DEFAULT 0,
    password_never_expires INTEGER NOT NULL DEFAULT 0,
    unix_uid BIGINT,
    unix_guid BIGINT,
    addresses TEXT,
    phonenumbers TEXT,
    attributes TEXT,
    relationships TEXT,
    recoveryemail TEXT,
    restrictedfields TEXT,
    delegatedauthority TEXT,
    externally_managed TEXT,
    mfa TEXT,
    ssh_keys TEXT
);
CREATE UNIQUE INDEX users_username_uq ON users (username);
CREATE UNIQUE INDEX users_email_uq ON users (email);
CREATE UNIQUE INDEX users_employeeidentifier_uq ON users (employeeidentifier);
CREATE INDEX users_state_ix ON users (state, id);
CREATE INDEX users_department_ix ON users (department, id);
CREATE INDEX users_lastname_ix ON users (lastname, id);
CREATE INDEX users_firstname_ix ON users (firstname, id);
CREATE INDEX users_manager_ix ON users (manager);

CREATE TABLE usergroups (
    id TEXT PRIMARY KEY,
    name TEXT NOT NULL,
    name_key TEXT NOT NULL,
    description TEXT,
    email TEXT,
    attributes TEXT,
    membership_method TEXT,
    unix_gid BIGINT,
    created TEXT NOT NULL,
    updated TEXT NOT NULL
);
CREATE UNIQUE INDEX usergroups_name_uq ON usergroups (name_key);

CREATE TABLE group_members (
    group_id TEXT NOT NULL REFERENCES usergroups (id) ON DELETE CASCADE,
    user_id TEXT NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    added TEXT NOT NULL,
    PRIMARY KEY (group_id, user_id)
);
CREATE INDEX group_members_user_ix ON group_members (user_id);

CREATE TABLE events (
    id TEXT PRIMARY KEY,
    time TEXT NOT NULL,
    actor_kind TEXT NOT NULL,
    actor_id TEXT,
    actor_name TEXT,
    action TEXT NOT NULL,
    target_kind TEXT,
    target_id TEXT,
    target_name TEXT,
    source TEXT NOT NULL,
    client_addr TEXT,
    outcome TEXT NOT NULL,
    changes TEXT,
    detail TEXT
);
CREATE INDEX events_target_ix ON events (target_id, id);
CREATE INDEX events_action_ix ON events (action, id);
CREATE INDEX events_time_ix ON events (time);

CREATE TABLE apikeys (
    id TEXT PRIMARY KEY,
    name TEXT NOT NULL,
    role TEXT NOT NULL,
    key_hash TEXT NOT NULL,
    prefix TEXT NOT NULL,
    created TEXT NOT NULL,
    created_by TEXT,
    last_used TEXT
);
CREATE UNIQUE INDEX apikeys_hash_uq ON apikeys (key_hash);

CREATE TABLE admins (
    id TEXT PRIMARY KEY,
    email TEXT NOT NULL,
    password_hash TEXT NOT NULL,
    role TEXT NOT NULL,
    created TEXT NOT NULL,
    updated TEXT NOT NULL
);
CREATE UNIQUE INDEX admins_email_uq ON admins (email);
