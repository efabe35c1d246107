-- GET /api/v1/auth/me as a browser sends it: the access cookie of a
-- cookie-transport login (from the environment), no Authorization header.
local cookie = os.getenv("GATEHOUSE_BENCH_ACCESS_COOKIE")
wrk.method = "GET"
wrk.path = "/api/v1/auth/me"
wrk.headers["Cookie"] = "__Host-gh_access=" .. cookie .. "; __Host-gh_csrf=unused-on-reads"
