-- Issue 19: the indexes of migration 0024 hold only the users with a value in their field. Most
-- directories leave company, cost center, employee type or location empty for most users, and an
-- entry per user without one (the NULLs) cost every import and about 40 bytes a user each. A list
-- filtered by `field = value` implies the value is not NULL, so both databases still read them.
-- In USER_SEARCH_INDEXES with the same condition.
DROP INDEX users_jobtitle_lastname_ix;
CREATE INDEX users_jobtitle_lastname_ix ON users (jobtitle, lower(lastname), id) WHERE jobtitle IS NOT NULL;
DROP INDEX users_company_lastname_ix;
CREATE INDEX users_company_lastname_ix ON users (company, lower(lastname), id) WHERE company IS NOT NULL;
DROP INDEX users_costcenter_lastname_ix;
CREATE INDEX users_costcenter_lastname_ix ON users (costcenter, lower(lastname), id) WHERE costcenter IS NOT NULL;
DROP INDEX users_employeetype_lastname_ix;
CREATE INDEX users_employeetype_lastname_ix ON users (employeetype, lower(lastname), id) WHERE employeetype IS NOT NULL;
DROP INDEX users_location_lastname_ix;
CREATE INDEX users_location_lastname_ix ON users (location, lower(lastname), id) WHERE location IS NOT NULL;
