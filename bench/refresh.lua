-- POST /api/v1/auth/token/refresh, each refresh token used exactly once:
-- run with one connection per thread, so each thread's chain is sequential.
-- Thread n starts from the n-th token of GATEHOUSE_BENCH_REFRESH (space-separated).
local counter = 0
local threads = {}

function setup(thread)
  counter = counter + 1
  thread:set("index", counter)
  table.insert(threads, thread)
end

function init(args)
  local tokens = {}
  for token in string.gmatch(os.getenv("GATEHOUSE_BENCH_REFRESH"), "%S+") do
    table.insert(tokens, token)
  end
  current = tokens[index]
end

function request()
  return wrk.format("POST", "/api/v1/auth/token/refresh", { ["Content-Type"] = "application/json" },
    '{"refresh": "' .. current .. '"}')
end

function response(status, headers, body)
  local next_token = string.match(body, '"refresh":"([^"]+)"')
  if next_token then
    current = next_token
  end
end
