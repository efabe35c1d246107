DROP TABLE throttle_windows;
CREATE TABLE login_failures (
    id        INTEGER PRIMARY KEY AUTOINCREMENT,
    scope     TEXT NOT NULL,
    subject   TEXT NOT NULL,
    failed_at TEXT NOT NULL
);
CREATE INDEX login_failures_subject ON login_failures (scope, subject, failed_at);
