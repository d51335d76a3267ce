-- RADIUS servers (§11, JumpCloud's `radiusserver`): resources of the graph (`radius_server`).
-- The shared secret is sealed with the data-dir key (XChaCha20-Poly1305), never stored in
-- clear. No two servers' sources overlap: the directory checks it under the write lock, so
-- a request's source names at most one server.
CREATE TABLE radius_servers (
    id TEXT PRIMARY KEY,
    name TEXT NOT NULL,
    network_source_ip TEXT NOT NULL,
    shared_secret TEXT NOT NULL,
    mfa TEXT NOT NULL,
    user_lockout_action TEXT NOT NULL,
    user_password_expiration_action TEXT NOT NULL,
    user_password_enabled INTEGER NOT NULL,
    created TEXT NOT NULL
);
