-- POST /api/v1/auth/signup with a fresh address per request.
local counter = 0
local threads = 0

function setup(thread)
  threads = threads + 1
  thread:set("id", threads)
end

function request()
  counter = counter + 1
  local body = string.format('{"email": "bench-%s-%d-%d@example.com", "password": "%s"}',
    os.getenv("GATEHOUSE_BENCH_RUN"), id, counter, os.getenv("GATEHOUSE_BENCH_PASSWORD"))
  return wrk.format("POST", "/api/v1/auth/signup", { ["Content-Type"] = "application/json" }, body)
end
