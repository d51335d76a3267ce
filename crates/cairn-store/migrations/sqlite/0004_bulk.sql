-- Import and bulk jobs (§6, §4.2): a job row, and one result row per record, written in the
-- same transaction as the users they describe, so a crash leaves results and users agreeing.
CREATE TABLE jobs (
    id TEXT PRIMARY KEY,
    kind TEXT NOT NULL,
    status TEXT NOT NULL,
    created TEXT NOT NULL,
    updated TEXT NOT NULL,
    created_by TEXT NOT NULL,
    params TEXT NOT NULL,
    total BIGINT NOT NULL DEFAULT 0,
    processed BIGINT NOT NULL DEFAULT 0,
    counts TEXT NOT NULL,
    message TEXT
);
CREATE INDEX jobs_status_ix ON jobs (status);

CREATE TABLE job_results (
    job_id TEXT NOT NULL,
    seq BIGINT NOT NULL,
    username TEXT,
    user_id TEXT,
    outcome TEXT NOT NULL,
    message TEXT,
    PRIMARY KEY (job_id, seq)
);
CREATE INDEX job_results_outcome_ix ON job_results (job_id, outcome, seq);

-- Prefix search (`search=`) on names stays indexed at scale; usernames and e-mails are
-- stored lowercase and already indexed.
CREATE INDEX users_lower_firstname_ix ON users (lower(firstname));
CREATE INDEX users_lower_lastname_ix ON users (lower(lastname));
CREATE INDEX users_lower_displayname_ix ON users (lower(displayname));
CREATE INDEX users_lower_department_ix ON users (lower(department));
CREATE INDEX users_employeeidentifier_lower_ix ON users (lower(employeeidentifier));
