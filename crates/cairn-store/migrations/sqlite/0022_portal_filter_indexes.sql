-- Issue 19: the admin portal's other filters at a million users, each with the admin's common
-- sorts (the default, by id, and by last name), served by reading one index in order.
--
-- Locked accounts, expired passwords and pending activations are rare (a few % of users):
-- partial indexes on the sort keys of only those users, small to keep up, read in order for a
-- page and counted alone. The store writes a boolean filter as a literal (`account_locked` /
-- `NOT account_locked`) so that a statement can name them (a bound `= ?` cannot select a
-- partial index). The common side (`$eq:false`, TOTP enrolled or not: 30 / 70 %) needs none:
-- reading the sort index in order finds a page after a few hundred entries at any size.
CREATE INDEX users_locked_lastname_ix ON users (lower(lastname), id) WHERE account_locked;
CREATE INDEX users_locked_id_ix ON users (id) WHERE account_locked;
CREATE INDEX users_expired_lastname_ix ON users (lower(lastname), id) WHERE password_expired;
CREATE INDEX users_expired_id_ix ON users (id) WHERE password_expired;
-- Activation pending (no password yet; the portal's `pw=pending`, `activated:$eq:false`).
CREATE INDEX users_pending_lastname_ix ON users (lower(lastname), id) WHERE password_hash IS NULL;
CREATE INDEX users_pending_id_ix ON users (id) WHERE password_hash IS NULL;
-- Any-column `$eq` on the organisation fields the portal shows: the matching users in id order
-- (the default sort, a cursor's range, and the count from the index alone).
CREATE INDEX users_jobtitle_ix ON users (jobtitle, id);
CREATE INDEX users_company_ix ON users (company, id);
CREATE INDEX users_costcenter_ix ON users (costcenter, id);
CREATE INDEX users_employeetype_ix ON users (employeetype, id);
CREATE INDEX users_location_ix ON users (location, id);
-- All of these are in USER_SEARCH_INDEXES too (dropped and built again by a large import).
