-- OAuth 2.0 client credentials (§2.2 Service account): the client secret is kept as its
-- SHA-256 (a long random string, like an API key's); access tokens likewise, each with its
-- expiry. Deleting an account deletes its tokens in the same transaction.
CREATE TABLE service_accounts (
    id TEXT PRIMARY KEY,
    name TEXT NOT NULL,
    role TEXT NOT NULL,
    client_id TEXT NOT NULL,
    secret_hash TEXT NOT NULL,
    created TEXT NOT NULL,
    created_by TEXT,
    last_used TEXT
);
CREATE UNIQUE INDEX service_accounts_client_uq ON service_accounts (client_id);

CREATE TABLE service_tokens (
    token_hash TEXT PRIMARY KEY,
    account_id TEXT NOT NULL,
    created TEXT NOT NULL,
    expires TEXT NOT NULL
);
CREATE INDEX service_tokens_account_ix ON service_tokens (account_id, created);
CREATE INDEX service_tokens_expires_ix ON service_tokens (expires);
