-- Mail (§5.1): every message is written here in the transaction of the change that causes it.
-- status: queued → sending → sent | failed (retried with backoff while attempts remain), or
-- logged when no SMTP server is configured.
CREATE TABLE outbox (
    id TEXT COLLATE "C" PRIMARY KEY,
    created TEXT COLLATE "C" NOT NULL,
    kind TEXT COLLATE "C" NOT NULL,
    to_addr TEXT COLLATE "C" NOT NULL,
    user_id TEXT COLLATE "C",
    subject TEXT COLLATE "C" NOT NULL,
    body_text TEXT COLLATE "C" NOT NULL,
    body_html TEXT COLLATE "C" NOT NULL,
    status TEXT COLLATE "C" NOT NULL,
    attempts BIGINT NOT NULL DEFAULT 0,
    next_attempt TEXT COLLATE "C" NOT NULL,
    claimed_until TEXT COLLATE "C",
    sent TEXT COLLATE "C",
    last_error TEXT COLLATE "C"
);
CREATE INDEX outbox_status_ix ON outbox (status, next_attempt);
CREATE INDEX outbox_to_ix ON outbox (to_addr, id);

-- The TOTP secret, encrypted with the key in CAIRN_DATA_DIR.
ALTER TABLE users ADD COLUMN totp_secret TEXT COLLATE "C";
