-- Issue 19: PostgreSQL's sort indexes carry lastname for index-only deep pages (see the
-- PostgreSQL migration of this number). SQLite reads an expression index's own values, so its
-- indexes need no change; this keeps the two numberings alike.
SELECT 1;
