-- Crypto-shredding (docs/adr/0002-crypto-shredding.md). One data key per user, stored
-- only wrapped by a key-encryption key (KEK) from configuration; deleting the row is
-- what makes the user's sealed event values unreadable. The writing connection runs
-- with `secure_delete`, so a deleted key's bytes are zeroed in the page rather than
-- left in free space (docs/security.md says what else keeps them, and for how long).
CREATE TABLE IF NOT EXISTS user_keys (
    userid  TEXT NOT NULL PRIMARY KEY,
    kek_id  TEXT NOT NULL,
    wrapped BLOB NOT NULL
) WITHOUT ROWID;
-- Every KEK that has wrapped a key here, so that a start-up with a wrong KEK is
-- refused instead of failing on every key later.
CREATE TABLE IF NOT EXISTS key_encryption_keys (
    kek_id        TEXT    NOT NULL PRIMARY KEY,
    registered_at INTEGER NOT NULL -- microseconds
) WITHOUT ROWID;
