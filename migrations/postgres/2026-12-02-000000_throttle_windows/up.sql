-- Attempts counted per key in fixed windows, shared by every instance. One
-- row per key, so that counting an attempt is one upsert that concurrent
-- attempts queue on: a guess is counted before it is checked.
DROP TABLE login_failures;
CREATE TABLE throttle_windows (
    -- 'email' (the lower-cased address, known or not) or 'ip'.
    scope     TEXT        NOT NULL,
    subject   TEXT        NOT NULL,
    opened_at TIMESTAMPTZ NOT NULL,
    hits      BIGINT      NOT NULL,
    PRIMARY KEY (scope, subject)
);
