-- The admin user list orders by these; its first page is read from an index.
CREATE INDEX users_date_joined ON users (date_joined, id);
CREATE INDEX users_last_login ON users (last_login, id);
