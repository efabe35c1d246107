-- Two-factor login. A factor is pending until its first code confirms it;
-- `secret` is sealed (never the base32 the user's app holds); `last_step`
-- is the last 30-second step a code was accepted for, so no code is
-- accepted twice. Recovery codes and login challenges are kept as SHA-256
-- hashes of what the user holds.
CREATE TABLE totp_factors (
    user_id      BIGINT      PRIMARY KEY REFERENCES users (id) ON DELETE CASCADE,
    secret       TEXT        NOT NULL,
    confirmed_at TIMESTAMPTZ,
    last_step    BIGINT
);

CREATE TABLE recovery_codes (
    user_id   BIGINT      NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    code_hash TEXT        NOT NULL,
    used_at   TIMESTAMPTZ,
    PRIMARY KEY (user_id, code_hash)
);

CREATE TABLE mfa_challenges (
    token_hash TEXT        PRIMARY KEY,
    user_id    BIGINT      NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    expires_at TIMESTAMPTZ NOT NULL,
    failures   BIGINT      NOT NULL DEFAULT 0
);
CREATE INDEX mfa_challenges_user ON mfa_challenges (user_id);
