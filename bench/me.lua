-- GET /api/v1/auth/me with the bench user's access token (from the environment).
local token = os.getenv("GATEHOUSE_BENCH_ACCESS")
wrk.method = "GET"
wrk.path = "/api/v1/auth/me"
wrk.headers["Authorization"] = "Bearer " .. token
