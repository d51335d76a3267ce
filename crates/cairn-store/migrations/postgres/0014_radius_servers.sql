-- RADIUS servers (§11, JumpCloud's `radiusserver`): resources of the graph (`radius_server`).
-- The shared secret is sealed with the data-dir key (XChaCha20-Poly1305), never stored in
-- clear. No two servers' sources overlap: the directory checks it with the table locked
-- against other writers (Db::lock_radius_servers), so a request's source names at most one.
CREATE TABLE radius_servers (
    id TEXT COLLATE "C" PRIMARY KEY,
    name TEXT COLLATE "C" NOT NULL,
    network_source_ip TEXT COLLATE "C" NOT NULL,
    shared_secret TEXT COLLATE "C" NOT NULL,
    mfa TEXT COLLATE "C" NOT NULL,
    user_lockout_action TEXT COLLATE "C" NOT NULL,
    user_password_expiration_action TEXT COLLATE "C" NOT NULL,
    user_password_enabled BIGINT NOT NULL,
    created TEXT COLLATE "C" NOT NULL
);

-- Every process's RADIUS listener keeps the servers in memory: a change here tells the
-- others at once (no change-log row: no read model follows it row by row).
CREATE FUNCTION cairn_notify_changed() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('cairn_changes', '');
    RETURN NULL;
END $$;
CREATE TRIGGER radius_servers_notify AFTER INSERT OR UPDATE OR DELETE ON radius_servers
    FOR EACH STATEMENT EXECUTE FUNCTION cairn_notify_changed();
