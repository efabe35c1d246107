-- The accounts `gatehouse import-django` made, with the hash it wrote: a
-- re-run updates only these, and replaces a password only while the stored
-- hash is still the imported one (a change or a rehash at login keeps it).
CREATE TABLE django_imports (
    user_id       BIGINT      PRIMARY KEY REFERENCES users (id) ON DELETE CASCADE,
    password_hash TEXT,
    imported_at   TIMESTAMPTZ NOT NULL
);
