-- POST /api/v1/auth/login with the right password, taking the bench's login
-- users in turn (GATEHOUSE_BENCH_LOGIN_USERS, space-separated), as real logins
-- spread over many accounts.
local users = {}
local next_user = 0

function init(args)
  for email in string.gmatch(os.getenv("GATEHOUSE_BENCH_LOGIN_USERS"), "%S+") do
    table.insert(users, email)
  end
end

function request()
  next_user = next_user % #users + 1
  local body = string.format('{"email": "%s", "password": "%s"}', users[next_user],
    os.getenv("GATEHOUSE_BENCH_PASSWORD"))
  return wrk.format("POST", "/api/v1/auth/login", { ["Content-Type"] = "application/json" }, body)
end
