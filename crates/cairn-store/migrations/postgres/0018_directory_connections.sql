-- Directory connections (§12): upstream LDAP / Active Directory servers whose users and groups
-- Cairn imports and follows. The settings are one JSON document (the domain validates it);
-- the bind password is sealed with the data-dir key, never stored in clear.
CREATE TABLE directory_connections (
    id TEXT COLLATE "C" PRIMARY KEY,
    name TEXT COLLATE "C" NOT NULL,
    settings TEXT NOT NULL,
    bind_password TEXT,
    created TEXT COLLATE "C" NOT NULL,
    updated TEXT COLLATE "C" NOT NULL,
    last_job TEXT COLLATE "C",
    -- When the next periodic sync is due; a process claims it by moving it forward.
    next_sync TEXT COLLATE "C"
);
CREATE UNIQUE INDEX directory_connections_name_uq ON directory_connections (name);

-- A user or group of Cairn that mirrors one upstream entry, matched by the upstream's stable
-- id (objectGUID, entryUUID), never by name. `suspended`: the sync suspended the user
-- (disabled, out of the filter or deleted upstream), so it reactivates it when it returns.
CREATE TABLE directory_links (
    connection_id TEXT COLLATE "C" NOT NULL REFERENCES directory_connections (id) ON DELETE CASCADE,
    kind TEXT COLLATE "C" NOT NULL,
    upstream_id TEXT COLLATE "C" NOT NULL,
    local_id TEXT COLLATE "C" NOT NULL,
    dn TEXT NOT NULL,
    suspended BIGINT NOT NULL DEFAULT 0,
    PRIMARY KEY (connection_id, kind, upstream_id)
);
CREATE INDEX directory_links_local_ix ON directory_links (local_id);
