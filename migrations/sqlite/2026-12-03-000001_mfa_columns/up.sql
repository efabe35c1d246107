-- Whether login asks for a second factor, on the user; and how each session's
-- user authenticated (its access tokens' amr claim, kept across refreshes).
ALTER TABLE users ADD COLUMN mfa_enabled BOOLEAN NOT NULL DEFAULT 0;
ALTER TABLE sessions ADD COLUMN amr TEXT NOT NULL DEFAULT 'pwd';
