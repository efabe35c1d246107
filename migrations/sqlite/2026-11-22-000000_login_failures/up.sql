-- Failed logins, kept in the store so every instance counts them together.
CREATE TABLE login_failures (
    id        INTEGER PRIMARY KEY AUTOINCREMENT,
    -- 'email' (the lower-cased address, known or not) or 'ip'.
    scope     TEXT NOT NULL,
    subject   TEXT NOT NULL,
    failed_at TEXT NOT NULL
);
CREATE INDEX login_failures_subject ON login_failures (scope, subject, failed_at);
