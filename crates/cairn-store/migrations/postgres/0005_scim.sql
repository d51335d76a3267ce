-- SCIM 2.0 (§9). Bearer tokens for identity providers, stored hashed like API keys.
CREATE TABLE scim_tokens (
    id TEXT COLLATE "C" PRIMARY KEY,
    name TEXT COLLATE "C" NOT NULL,
    token_hash TEXT COLLATE "C" NOT NULL,
    prefix TEXT COLLATE "C" NOT NULL,
    created TEXT COLLATE "C" NOT NULL,
    created_by TEXT COLLATE "C",
    last_used TEXT COLLATE "C"
);
CREATE UNIQUE INDEX scim_tokens_hash_uq ON scim_tokens (token_hash);

-- The identity provider's own id for a resource (`externalId`, case-exact), and the SCIM
-- `userName` as the provider sent it when it is not a valid Cairn username (an e-mail
-- address, say): `scim_username_key` is its lowercase form, unique, and what filters compare.
ALTER TABLE users ADD COLUMN scim_external_id TEXT COLLATE "C";
ALTER TABLE users ADD COLUMN scim_username TEXT COLLATE "C";
ALTER TABLE users ADD COLUMN scim_username_key TEXT COLLATE "C";
CREATE INDEX users_scim_external_id_ix ON users (scim_external_id);
CREATE UNIQUE INDEX users_scim_username_uq ON users (scim_username_key);
CREATE INDEX users_updated_ix ON users (updated, id);

ALTER TABLE usergroups ADD COLUMN scim_external_id TEXT COLLATE "C";
CREATE INDEX usergroups_scim_external_id_ix ON usergroups (scim_external_id);
