-- Append-only security events. No foreign keys: the trail outlives the accounts it names.
CREATE TABLE audit_events (
    id         INTEGER PRIMARY KEY AUTOINCREMENT,
    at         TEXT    NOT NULL,
    event      TEXT    NOT NULL,
    user_id    INTEGER,
    actor_id   INTEGER,
    ip         TEXT,
    user_agent TEXT,
    -- A JSON object; never a password, hash or token.
    detail     TEXT    NOT NULL DEFAULT '{}'
);
CREATE INDEX audit_events_user ON audit_events (user_id, id);
CREATE INDEX audit_events_event ON audit_events (event, id);
