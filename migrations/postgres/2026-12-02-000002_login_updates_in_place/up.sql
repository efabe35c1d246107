-- Every login sets users.last_login. With an index on that column each of
-- those updates wrote a new entry into every index of users; without one
-- PostgreSQL updates the row in place (a HOT update). The user list's order
-- on last_login (NULLs last) never read that index anyway: it sorts.
DROP INDEX users_last_login;
-- Room on each page for the new row versions of those updates.
ALTER TABLE users SET (fillfactor = 90);
