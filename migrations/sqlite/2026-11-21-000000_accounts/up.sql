-- Accounts, groups and permissions, sessions, one-time tokens and the mail outbox.
-- Times are RFC 3339 text in UTC (diesel's TimestamptzSqlite).

CREATE TABLE users (
    id            INTEGER PRIMARY KEY AUTOINCREMENT,
    email         TEXT    NOT NULL,
    -- The whole address lower-cased: what makes two addresses one account.
    email_key     TEXT    NOT NULL UNIQUE,
    password_hash TEXT,
    first_name    TEXT    NOT NULL DEFAULT '',
    last_name     TEXT    NOT NULL DEFAULT '',
    is_active     BOOLEAN NOT NULL DEFAULT 1,
    is_staff      BOOLEAN NOT NULL DEFAULT 0,
    is_superuser  BOOLEAN NOT NULL DEFAULT 0,
    is_verified   BOOLEAN NOT NULL DEFAULT 0,
    date_joined   TEXT    NOT NULL,
    last_login    TEXT
);

CREATE TABLE profiles (
    user_id INTEGER PRIMARY KEY REFERENCES users (id) ON DELETE CASCADE,
    phone   TEXT,
    gender  TEXT,
    bio     TEXT NOT NULL DEFAULT ''
);

CREATE TABLE groups (
    id   INTEGER PRIMARY KEY AUTOINCREMENT,
    name TEXT NOT NULL UNIQUE
);

CREATE TABLE group_permissions (
    group_id   INTEGER NOT NULL REFERENCES groups (id) ON DELETE CASCADE,
    permission TEXT    NOT NULL,
    PRIMARY KEY (group_id, permission)
);

CREATE TABLE user_groups (
    user_id  INTEGER NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    group_id INTEGER NOT NULL REFERENCES groups (id) ON DELETE CASCADE,
    PRIMARY KEY (user_id, group_id)
);
CREATE INDEX user_groups_group ON user_groups (group_id);

INSERT INTO groups (name) VALUES ('Regular User'), ('Admin User');
INSERT INTO group_permissions (group_id, permission)
SELECT id, p.permission FROM groups,
    (SELECT 'users.view' AS permission UNION ALL SELECT 'users.add' UNION ALL SELECT 'users.change'
     UNION ALL SELECT 'users.delete' UNION ALL SELECT 'groups.view' UNION ALL SELECT 'groups.change'
     UNION ALL SELECT 'audit.view') AS p
WHERE groups.name = 'Admin User';

CREATE TABLE sessions (
    id           TEXT    PRIMARY KEY,
    user_id      INTEGER NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    created_at   TEXT    NOT NULL,
    last_used_at TEXT    NOT NULL,
    -- Moves forward with each refresh: an idle session dies with its refresh token.
    expires_at   TEXT    NOT NULL,
    revoked_at   TEXT,
    user_agent   TEXT,
    ip           TEXT
);
CREATE INDEX sessions_user ON sessions (user_id);

CREATE TABLE refresh_tokens (
    token_hash TEXT PRIMARY KEY,
    session_id TEXT NOT NULL REFERENCES sessions (id) ON DELETE CASCADE,
    issued_at  TEXT NOT NULL,
    expires_at TEXT NOT NULL,
    used_at    TEXT
);
CREATE INDEX refresh_tokens_session ON refresh_tokens (session_id);

CREATE TABLE one_time_tokens (
    token_hash TEXT    PRIMARY KEY,
    user_id    INTEGER NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    purpose    TEXT    NOT NULL,
    new_email  TEXT,
    created_at TEXT    NOT NULL,
    expires_at TEXT    NOT NULL,
    used_at    TEXT
);
CREATE INDEX one_time_tokens_user ON one_time_tokens (user_id, purpose);

CREATE TABLE outbox (
    id              INTEGER PRIMARY KEY AUTOINCREMENT,
    recipient       TEXT    NOT NULL,
    subject         TEXT    NOT NULL,
    text_body       TEXT    NOT NULL,
    html_body       TEXT    NOT NULL,
    created_at      TEXT    NOT NULL,
    attempts        INTEGER NOT NULL DEFAULT 0,
    -- NULL once delivery was given up.
    next_attempt_at TEXT,
    last_error      TEXT
);
CREATE INDEX outbox_due ON outbox (next_attempt_at);
