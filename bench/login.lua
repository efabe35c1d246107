-- POST /api/v1/auth/login with the bench user's right password.
wrk.method = "POST"
wrk.path = "/api/v1/auth/login"
wrk.headers["Content-Type"] = "application/json"
wrk.body = '{"email": "' .. os.getenv("GATEHOUSE_BENCH_EMAIL") .. '", "password": "' .. os.getenv("GATEHOUSE_BENCH_PASSWORD") .. '"}'
