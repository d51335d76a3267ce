-- Mail (§5.1): every message is written here in the transaction of the change that causes it.
-- status: queued → sending → sent | failed (retried with backoff while attempts remain), or
-- logged when no SMTP server is configured.
CREATE TABLE outbox (
    id TEXT PRIMARY KEY,
    created TEXT NOT NULL,
    kind TEXT NOT NULL,
    to_addr TEXT NOT NULL,
    user_id TEXT,
    subject TEXT NOT NULL,
    body_text TEXT NOT NULL,
    body_html TEXT NOT NULL,
    status TEXT NOT NULL,
    attempts BIGINT NOT NULL DEFAULT 0,
    next_attempt TEXT NOT NULL,
    claimed_until TEXT,
    sent TEXT,
    last_error TEXT
);
CREATE INDEX outbox_status_ix ON outbox (status, next_attempt);
CREATE INDEX outbox_to_ix ON outbox (to_addr, id);

-- The TOTP secret, encrypted with the key in CAIRN_DATA_DIR.
ALTER TABLE users ADD COLUMN totp_secret TEXT;
