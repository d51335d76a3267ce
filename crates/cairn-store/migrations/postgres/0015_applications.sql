-- Applications (§2.2, §4.1): OpenID Connect relying parties, resources of the graph. The
-- client secret is kept as its SHA-256 (a long random string, like an API key's); a public
-- client has none. `settings` holds the rest of the record as JSON (label, description,
-- active, redirect URIs, grant types, scopes, signing algorithm), read and written whole.
-- Deleting an application deletes its associations, codes and tokens in the same transaction.
CREATE TABLE applications (
    id TEXT COLLATE "C" PRIMARY KEY,
    name TEXT COLLATE "C" NOT NULL,
    client_id TEXT COLLATE "C" NOT NULL,
    secret_hash TEXT COLLATE "C",
    settings TEXT COLLATE "C" NOT NULL,
    created TEXT COLLATE "C" NOT NULL
);
CREATE UNIQUE INDEX applications_client_uq ON applications (client_id);

-- The provider's signing keys: the private key sealed with the data-dir key, the public JWK
-- in clear. A key is published from `created`, signs from `activates`, and is dropped from the
-- JWKS once `retires` (set when a newer key starts signing, plus the longest token lifetime)
-- has passed.
CREATE TABLE oidc_keys (
    kid TEXT COLLATE "C" PRIMARY KEY,
    alg TEXT COLLATE "C" NOT NULL,
    sealed TEXT COLLATE "C" NOT NULL,
    public_jwk TEXT COLLATE "C" NOT NULL,
    created TEXT COLLATE "C" NOT NULL,
    activates TEXT COLLATE "C" NOT NULL,
    retires TEXT COLLATE "C"
);

-- Authorization codes, by the SHA-256 of the code: single-use (`used` set when redeemed),
-- short-lived; a redeemed code remembers the token family it produced, so its replay
-- revokes that family.
CREATE TABLE oidc_codes (
    code_hash TEXT COLLATE "C" PRIMARY KEY,
    app_id TEXT COLLATE "C" NOT NULL,
    user_id TEXT COLLATE "C" NOT NULL,
    data TEXT COLLATE "C" NOT NULL,
    family TEXT COLLATE "C" NOT NULL,
    created TEXT COLLATE "C" NOT NULL,
    expires TEXT COLLATE "C" NOT NULL,
    used TEXT COLLATE "C"
);
CREATE INDEX oidc_codes_expires_ix ON oidc_codes (expires);
CREATE INDEX oidc_codes_user_ix ON oidc_codes (user_id);

-- Access and refresh tokens, by the SHA-256 of the token. A family is every token issued from
-- one code through its refreshes; `rotated` marks a refresh token already exchanged (its reuse
-- revokes the family). Revoking deletes the rows.
CREATE TABLE oidc_tokens (
    token_hash TEXT COLLATE "C" PRIMARY KEY,
    kind TEXT COLLATE "C" NOT NULL,
    family TEXT COLLATE "C" NOT NULL,
    app_id TEXT COLLATE "C" NOT NULL,
    user_id TEXT COLLATE "C" NOT NULL,
    data TEXT COLLATE "C" NOT NULL,
    created TEXT COLLATE "C" NOT NULL,
    expires TEXT COLLATE "C" NOT NULL,
    rotated TEXT COLLATE "C"
);
CREATE INDEX oidc_tokens_family_ix ON oidc_tokens (family);
CREATE INDEX oidc_tokens_user_ix ON oidc_tokens (user_id, app_id);
CREATE INDEX oidc_tokens_app_ix ON oidc_tokens (app_id);
CREATE INDEX oidc_tokens_expires_ix ON oidc_tokens (expires);
