ALTER TABLE users RESET (fillfactor);
CREATE INDEX users_last_login ON users (last_login, id);
