-- Issue 19: the admin lists' common filters with their common sort, at a million users. A page
-- filtered by department or state and sorted by last name (either way: the index is read
-- backwards for a descending sort) reads 100 entries of one of these in order instead of sorting
-- the whole department or state; a keyset cursor is a range of it; the count of a department or a
-- state is answered by the index alone (department is in it, last: the equality filter narrows by
-- lower() and then compares exactly). Also in USER_SEARCH_INDEXES (dropped and built again by a
-- large import).
CREATE INDEX users_department_lastname_ix ON users (lower(department), lower(lastname), id, department);
CREATE INDEX users_state_lastname_ix ON users (state, lower(lastname), id);
