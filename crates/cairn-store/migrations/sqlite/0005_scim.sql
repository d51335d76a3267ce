-- SCIM 2.0 (§9). Bearer tokens for identity providers, stored hashed like API keys.
CREATE TABLE scim_tokens (
    id TEXT PRIMARY KEY,
    name TEXT NOT NULL,
    token_hash TEXT NOT NULL,
    prefix TEXT NOT NULL,
    created TEXT NOT NULL,
    created_by TEXT,
    last_used TEXT
);
CREATE UNIQUE INDEX scim_tokens_hash_uq ON scim_tokens (token_hash);

-- The identity provider's own id for a resource (`externalId`, case-exact), and the SCIM
-- `userName` as the provider sent it when it is not a valid Cairn username (an e-mail
-- address, say): `scim_username_key` is its lowercase form, unique, and what filters compare.
ALTER TABLE users ADD COLUMN scim_external_id TEXT;
ALTER TABLE users ADD COLUMN scim_username TEXT;
ALTER TABLE users ADD COLUMN scim_username_key TEXT;
CREATE INDEX users_scim_external_id_ix ON users (scim_external_id);
CREATE UNIQUE INDEX users_scim_username_uq ON users (scim_username_key);
CREATE INDEX users_updated_ix ON users (updated, id);

ALTER TABLE usergroups ADD COLUMN scim_external_id TEXT;
CREATE INDEX usergroups_scim_external_id_ix ON usergroups (scim_external_id);
