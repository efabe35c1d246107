-- GET /admin/users as the console's browser sends it: the first page (20
-- rows) for a signed-in superuser, by the access cookie from the environment.
local cookie = os.getenv("GATEHOUSE_BENCH_ADMIN_COOKIE")
wrk.method = "GET"
wrk.path = "/admin/users"
wrk.headers["Cookie"] = "__Host-gh_access=" .. cookie
