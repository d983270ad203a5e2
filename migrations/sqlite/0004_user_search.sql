-- The search projection (src/domain/search.rs): the terms each of email, firstname and
-- lastname is found by. The terms live in an index table, one row per term, so that a
-- search is an index lookup; the users row keeps the write time of each set, which the
-- shared projection merges like any other cell.
ALTER TABLE users ADD COLUMN email_search_wt INTEGER;
ALTER TABLE users ADD COLUMN firstname_search_wt INTEGER;
ALTER TABLE users ADD COLUMN lastname_search_wt INTEGER;
CREATE TABLE IF NOT EXISTS users_search_terms (
    field  TEXT NOT NULL, -- email_search, firstname_search or lastname_search
    term   TEXT NOT NULL,
    userid TEXT NOT NULL,
    PRIMARY KEY (field, term, userid)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS users_search_terms_by_user ON users_search_terms (userid, field);
-- Who is a moderator: the last-moderator rule counts them.
CREATE INDEX IF NOT EXISTS users_by_account_status ON users (account_status);
