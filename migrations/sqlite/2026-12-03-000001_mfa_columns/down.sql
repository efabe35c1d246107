ALTER TABLE sessions DROP COLUMN amr;
ALTER TABLE users DROP COLUMN mfa_enabled;
