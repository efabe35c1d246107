DROP INDEX users_last_login;
DROP INDEX users_date_joined;
