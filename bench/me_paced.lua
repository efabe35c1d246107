-- GET /api/v1/auth/me at a fixed rate, GATEHOUSE_BENCH_RATE requests a second
-- for each wrk thread, however fast the answers come: the requests take their
-- turns on one schedule, and a connection that is free waits for the next
-- turn, not for the previous answer. The latency is the answer's, from the
-- moment the request is sent; keep enough connections that one is always free.
local ffi = require("ffi")
ffi.cdef [[
  typedef struct { long tv_sec; long tv_nsec; } bench_timespec;
  int clock_gettime(int clock, bench_timespec *t);
]]
local CLOCK_MONOTONIC = 1
local clock = ffi.new("bench_timespec")
local period_ms
local next_turn

local function now_ms()
  ffi.C.clock_gettime(CLOCK_MONOTONIC, clock)
  return tonumber(clock.tv_sec) * 1000 + tonumber(clock.tv_nsec) / 1e6
end

wrk.method = "GET"
wrk.path = "/api/v1/auth/me"
wrk.headers["Authorization"] = "Bearer " .. os.getenv("GATEHOUSE_BENCH_ACCESS")

function init(args)
  period_ms = 1000 / tonumber(os.getenv("GATEHOUSE_BENCH_RATE"))
end

-- Called before each request: the wait, in whole milliseconds, until its turn.
function delay()
  local now = now_ms()
  next_turn = (next_turn or now) + period_ms
  return math.max(0, math.floor(next_turn - now + 0.5))
end
