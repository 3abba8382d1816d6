-- A wrk script that sends every request from a new client address, as clients behind a trusted
-- proxy (or an attacker with many addresses) would: `X-Forwarded-For: 10.a.b.c`, counting up
-- from OFFSET. For deploy/bench/abuse.sh, with one wrk thread; by hand:
--
--   wrk -t1 -c64 -d5s -s deploy/bench/addresses.lua http://127.0.0.1:PORT/api/courses/ -- OFFSET
--
-- The gateway must list 127.0.0.1 in `trusted_proxies` for the addresses to count as clients.

function init(args)
  offset = tonumber(args[1] or "0")
  count = 0
end

-- The n-th address: 10.0.0.0 onwards, then 11.0.0.0 onwards past 2^24.
local function address(n)
  local d = n % 256
  local c = math.floor(n / 256) % 256
  local b = math.floor(n / 65536) % 256
  local a = 10 + math.floor(n / 16777216)
  return a .. "." .. b .. "." .. c .. "." .. d
end

function request()
  wrk.headers["X-Forwarded-For"] = address(offset + count)
  count = count + 1
  return wrk.format()
end
