-- What a sync last applied to a linked user, so a re-sync can tell an unchanged upstream entry
-- without reading the user back: a digest of the fields the upstream asked for, and the user's
-- `updated` right after (any later change in Cairn makes the sync compare the user again).
ALTER TABLE directory_links ADD COLUMN digest TEXT;
ALTER TABLE directory_links ADD COLUMN user_updated TEXT;
