-- Issue 19: the Users page sorts by alternate email, description, manager, password set, UID and
-- GID, which no index ordered: each page read and sorted every user (0.2-2.1 s at 1,000,000).
-- Such a page is now the users without a value in id order and those with one through these
-- indexes, which hold only the users with a value (most directories leave most of these empty,
-- so they cost an import little). In USER_SEARCH_INDEXES with the same condition.
CREATE INDEX users_alternateemail_ix ON users (alternateemail, id) WHERE alternateemail IS NOT NULL;
CREATE INDEX users_description_ix ON users (description, id) WHERE description IS NOT NULL;
CREATE INDEX users_password_date_ix ON users (password_date, id) WHERE password_date IS NOT NULL;
CREATE INDEX users_unix_uid_ix ON users (unix_uid, id) WHERE unix_uid IS NOT NULL;
CREATE INDEX users_unix_guid_ix ON users (unix_guid, id) WHERE unix_guid IS NOT NULL;
-- The manager lookup's index, with the id: it orders a manager's reports too.
DROP INDEX users_manager_ix;
CREATE INDEX users_manager_ix ON users (manager, id) WHERE manager IS NOT NULL;
