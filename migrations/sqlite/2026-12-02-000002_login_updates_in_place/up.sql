-- Every login sets users.last_login; an index on it was upkeep on each of
-- them, and the user list's order on last_login (NULLs last) sorts anyway.
DROP INDEX users_last_login;
