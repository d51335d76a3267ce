-- Fewer indexes on users, so large imports stay fast: one case-insensitive index per name
-- field serves the equality filter (narrowed by lower(), then compared exactly), the prefix
-- search and the sort (names sort case-insensitively). Columns most users leave empty are
-- indexed only where set.
DROP INDEX users_department_ix;
DROP INDEX users_lastname_ix;
DROP INDEX users_firstname_ix;
DROP INDEX users_lower_firstname_ix;
DROP INDEX users_lower_lastname_ix;
DROP INDEX users_lower_displayname_ix;
DROP INDEX users_lower_department_ix;
CREATE INDEX users_firstname_ix ON users (lower(firstname), id);
CREATE INDEX users_lastname_ix ON users (lower(lastname), id);
CREATE INDEX users_displayname_ix ON users (lower(displayname), id);
CREATE INDEX users_department_ix ON users (lower(department), id);

DROP INDEX users_manager_ix;
CREATE INDEX users_manager_ix ON users (manager) WHERE manager IS NOT NULL;
DROP INDEX users_scim_external_id_ix;
CREATE INDEX users_scim_external_id_ix ON users (scim_external_id) WHERE scim_external_id IS NOT NULL;
DROP INDEX users_scim_username_uq;
CREATE UNIQUE INDEX users_scim_username_uq ON users (scim_username_key) WHERE scim_username_key IS NOT NULL;
-- SCIM's meta.lastModified filters are rare enough to scan.
DROP INDEX users_updated_ix;

-- Job results are read by job, in record order: the key is the table; an outcome filter
-- reads the job's rows.
CREATE TABLE job_results_new (
    job_id TEXT NOT NULL,
    seq BIGINT NOT NULL,
    username TEXT,
    user_id TEXT,
    outcome TEXT NOT NULL,
    message TEXT,
    PRIMARY KEY (job_id, seq)
) WITHOUT ROWID;
INSERT INTO job_results_new SELECT job_id, seq, username, user_id, outcome, message FROM job_results;
DROP TABLE job_results;
ALTER TABLE job_results_new RENAME TO job_results;
