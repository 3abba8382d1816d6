-- A wrk script that sends a different, well-formed, unknown API key with every request, as a
-- client making keys up would: `X-API-Key: gk_<10 of [a-z0-9]>.<43 of [A-Za-z0-9_-]>`, the shape
-- `guichet keys create` gives. For deploy/bench/abuse.sh; by hand:
--
--   wrk -t1 -c64 -d8s -s deploy/bench/unknown_keys.lua http://127.0.0.1:PORT/api/courses/
--
-- On an `auth: api_key` route every answer is 401 (wrk counts them as non-2xx); on an
-- `auth: none` route the requests go through as anonymous. Each wrk thread has its own range of
-- prefixes and each run a random start, so no prefix repeats within a run (2^30 requests per
-- thread, 128 threads at most).

local digits = "0123456789abcdefghijklmnopqrstuvwxyz"
local secret = "madeUpSecretOfTheAbuseBenchmark_0123456789x"
local threads = 0

function setup(thread)
  thread:set("index", threads)
  threads = threads + 1
end

function init(args)
  math.randomseed(os.time() + index)
  -- run (14 bits) | thread (7 bits) | count (30 bits): below 36^10, exact in a double.
  base = math.random(0, 2 ^ 14 - 1) * 2 ^ 37 + (index % 128) * 2 ^ 30
  count = 0
end

-- n in base 36, ten digits.
local function prefix(n)
  local out = {}
  for i = 10, 1, -1 do
    local d = n % 36
    out[i] = digits:sub(d + 1, d + 1)
    n = (n - d) / 36
  end
  return "gk_" .. table.concat(out)
end

function request()
  count = count + 1
  wrk.headers["X-API-Key"] = prefix(base + count % 2 ^ 30) .. "." .. secret
  return wrk.format()
end
