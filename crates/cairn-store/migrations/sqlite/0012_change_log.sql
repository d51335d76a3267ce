-- What changed in the records a read model serves (the LDAP tree): one row per changed user,
-- group, group membership, association or LDAP server, written by triggers so that no write
-- path can forget it. A reader keeps the last `seq` it applied and reads on from there;
-- SQLite runs one writer at a time, so `seq` order is commit order. Rows are pruned after an
-- hour (Db::prune_changes); a reader further behind loads everything again.
-- Lockout counters and the last TOTP step are left out: they change on every failed sign-in
-- and no read model shows them (a lock itself is logged).
CREATE TABLE change_log (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    kind TEXT NOT NULL,
    id TEXT NOT NULL,
    at TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now'))
);

CREATE TRIGGER users_change_ins AFTER INSERT ON users
BEGIN INSERT INTO change_log (kind, id) VALUES ('user', NEW.id); END;
CREATE TRIGGER users_change_del AFTER DELETE ON users
BEGIN INSERT INTO change_log (kind, id) VALUES ('user', OLD.id); END;
CREATE TRIGGER users_change_upd AFTER UPDATE ON users
WHEN NEW.updated IS NOT OLD.updated OR NEW.state IS NOT OLD.state OR NEW.username IS NOT OLD.username
  OR NEW.account_locked IS NOT OLD.account_locked OR NEW.password_expired IS NOT OLD.password_expired
  OR NEW.password_hash IS NOT OLD.password_hash
BEGIN INSERT INTO change_log (kind, id) VALUES ('user', NEW.id); END;

CREATE TRIGGER usergroups_change_ins AFTER INSERT ON usergroups
BEGIN INSERT INTO change_log (kind, id) VALUES ('group', NEW.id); END;
CREATE TRIGGER usergroups_change_upd AFTER UPDATE ON usergroups
BEGIN INSERT INTO change_log (kind, id) VALUES ('group', NEW.id); END;
CREATE TRIGGER usergroups_change_del AFTER DELETE ON usergroups
BEGIN INSERT INTO change_log (kind, id) VALUES ('group', OLD.id); END;

CREATE TRIGGER group_members_change_ins AFTER INSERT ON group_members
BEGIN INSERT INTO change_log (kind, id) VALUES ('members', NEW.group_id); END;
CREATE TRIGGER group_members_change_del AFTER DELETE ON group_members
BEGIN INSERT INTO change_log (kind, id) VALUES ('members', OLD.group_id); END;

CREATE TRIGGER associations_change_ins AFTER INSERT ON associations
BEGIN INSERT INTO change_log (kind, id) VALUES ('grant', NEW.to_id); END;
CREATE TRIGGER associations_change_del AFTER DELETE ON associations
BEGIN INSERT INTO change_log (kind, id) VALUES ('grant', OLD.to_id); END;

CREATE TRIGGER ldap_servers_change_upd AFTER UPDATE ON ldap_servers
BEGIN INSERT INTO change_log (kind, id) VALUES ('ldap_server', NEW.id); END;
