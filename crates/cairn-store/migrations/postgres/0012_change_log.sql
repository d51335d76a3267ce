-- What changed in the records a read model serves (the LDAP tree): one row per changed user,
-- group, group membership, association or LDAP server, written by triggers so that no write
-- path can forget it, and a notification on channel `cairn_changes` so that every process
-- reads them at once. Transactions commit in another order than they take sequence numbers,
-- so a reader does not follow `seq`: it keeps the oldest transaction that was still running
-- when it last read (pg_snapshot_xmin) and reads again every row written by that one or a
-- later one. Rows are pruned after an hour (Db::prune_changes); a reader further behind loads
-- everything again. Lockout counters and the last TOTP step are left out: they change on
-- every failed sign-in and no read model shows them (a lock itself is logged).
CREATE TABLE change_log (
    seq BIGSERIAL PRIMARY KEY,
    kind TEXT COLLATE "C" NOT NULL,
    id TEXT COLLATE "C" NOT NULL,
    xid xid8 NOT NULL DEFAULT pg_current_xact_id(),
    at TIMESTAMPTZ NOT NULL DEFAULT now()
);
CREATE INDEX change_log_xid_ix ON change_log (xid);

-- One statement-level trigger per table and event (transition tables allow one event each),
-- so a 100,000-row import writes its rows with one INSERT … SELECT.
CREATE FUNCTION cairn_log_inserted() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    EXECUTE format('INSERT INTO change_log (kind, id) SELECT %L, %I FROM new_rows', TG_ARGV[0], TG_ARGV[1]);
    PERFORM pg_notify('cairn_changes', '');
    RETURN NULL;
END $$;

CREATE FUNCTION cairn_log_deleted() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    EXECUTE format('INSERT INTO change_log (kind, id) SELECT %L, %I FROM old_rows', TG_ARGV[0], TG_ARGV[1]);
    PERFORM pg_notify('cairn_changes', '');
    RETURN NULL;
END $$;

CREATE FUNCTION cairn_log_updated() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    EXECUTE format('INSERT INTO change_log (kind, id) SELECT %L, n.%I FROM new_rows n', TG_ARGV[0], TG_ARGV[1]);
    PERFORM pg_notify('cairn_changes', '');
    RETURN NULL;
END $$;

-- Users: only the columns a read model shows (see above).
CREATE FUNCTION cairn_log_users_updated() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE changed BIGINT;
BEGIN
    INSERT INTO change_log (kind, id)
    SELECT 'user', n.id FROM new_rows n JOIN old_rows o ON o.id = n.id
    WHERE n.updated IS DISTINCT FROM o.updated OR n.state IS DISTINCT FROM o.state
       OR n.username IS DISTINCT FROM o.username OR n.account_locked IS DISTINCT FROM o.account_locked
       OR n.password_expired IS DISTINCT FROM o.password_expired
       OR n.password_hash IS DISTINCT FROM o.password_hash;
    GET DIAGNOSTICS changed = ROW_COUNT;
    IF changed > 0 THEN
        PERFORM pg_notify('cairn_changes', '');
    END IF;
    RETURN NULL;
END $$;

CREATE TRIGGER users_change_ins AFTER INSERT ON users REFERENCING NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION cairn_log_inserted('user', 'id');
CREATE TRIGGER users_change_del AFTER DELETE ON users REFERENCING OLD TABLE AS old_rows
    FOR EACH STATEMENT EXECUTE FUNCTION cairn_log_deleted('user', 'id');
CREATE TRIGGER users_change_upd AFTER UPDATE ON users REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION cairn_log_users_updated();

CREATE TRIGGER usergroups_change_ins AFTER INSERT ON usergroups REFERENCING NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION cairn_log_inserted('group', 'id');
CREATE TRIGGER usergroups_change_del AFTER DELETE ON usergroups REFERENCING OLD TABLE AS old_rows
    FOR EACH STATEMENT EXECUTE FUNCTION cairn_log_deleted('group', 'id');
CREATE TRIGGER usergroups_change_upd AFTER UPDATE ON usergroups REFERENCING NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION cairn_log_updated('group', 'id');

CREATE TRIGGER group_members_change_ins AFTER INSERT ON group_members REFERENCING NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION cairn_log_inserted('members', 'group_id');
CREATE TRIGGER group_members_change_del AFTER DELETE ON group_members REFERENCING OLD TABLE AS old_rows
    FOR EACH STATEMENT EXECUTE FUNCTION cairn_log_deleted('members', 'group_id');

CREATE TRIGGER associations_change_ins AFTER INSERT ON associations REFERENCING NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION cairn_log_inserted('grant', 'to_id');
CREATE TRIGGER associations_change_del AFTER DELETE ON associations REFERENCING OLD TABLE AS old_rows
    FOR EACH STATEMENT EXECUTE FUNCTION cairn_log_deleted('grant', 'to_id');

CREATE TRIGGER ldap_servers_change_upd AFTER UPDATE ON ldap_servers REFERENCING NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION cairn_log_updated('ldap_server', 'id');
