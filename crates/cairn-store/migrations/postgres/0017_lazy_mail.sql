-- Mail rendered when it is read or sent (issue 19): a new message keeps only what its template
-- needs (username, name, organization, link, validity) as JSON here, with empty subject and
-- bodies, instead of about 1.2 KB of composed text and HTML.
ALTER TABLE outbox ADD COLUMN params TEXT;
