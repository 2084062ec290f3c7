-- Requests for billhive's benchmark (bench/README.md). Arguments after "--":
--   method    GET or POST (POST sends an empty form body, as the SDK does for collect)
--   template  the path, "{id}" replaced by an invoice id: /api/v1/invoices/{id}/collect
--   auth      the Authorization header's value
--   prefix    thread k reads its ids from <prefix><k>.txt, one a line; "-": no ids. A line may be
--             "<id>\t<Authorization value>": that request goes with its own key (many sites at
--             once: bench/multisite.py), instead of auth's
--   mode      once:   each id at most once, in file order (collect: an id is never collected
--                     twice); when a thread's ids run out, its connections wait for their last
--                     answers and the thread stops
--             cycle:  the ids in file order, starting over at the end
--             random: a uniformly random id each request
--   conns     connections per thread
--   hook      "delay": go through delay() before each request (needed by once; give a run and its
--             ceiling the same setting, so that wrk does the same work for both); "none": don't
-- done() prints one line, "BENCH_JSON {...}", that bench/load.py reads.

local ffi = require("ffi")
ffi.cdef[[
  typedef struct { long tv_sec; long tv_nsec; } bench_timespec;
  int clock_gettime(int clk_id, bench_timespec *tp);
]]
local ts = ffi.new("bench_timespec")

local function now_us()  -- CLOCK_MONOTONIC, as wrk's own clock
  ffi.C.clock_gettime(1, ts)
  return tonumber(ts.tv_sec) * 1000000 + tonumber(ts.tv_nsec) / 1000
end

local threads = {}
local count = 0

function setup(thread)
  thread:set("tid", count)
  count = count + 1
  table.insert(threads, thread)
end

function init(args)
  method, template, mode = args[1], args[2], args[5]
  conns = tonumber(args[6])
  if args[7] ~= "delay" then
    delay = nil
  end
  headers = {["Authorization"] = args[3]}
  body = nil
  if method == "POST" then
    headers["Content-Type"] = "application/x-www-form-urlencoded"
    body = ""
  end
  ids = {}
  auths = {}  -- ids[k]'s own headers (a line "<id>\t<auth>"), else nil: the common headers
  local by_auth = {}
  if args[4] ~= "-" then
    for line in io.lines(args[4] .. tid .. ".txt") do
      local id, auth = line:match("^([^\t]+)\t(.+)$")
      if id then
        if not by_auth[auth] then
          local h = {["Authorization"] = auth}
          for k, v in pairs(headers) do
            if k ~= "Authorization" then h[k] = v end
          end
          by_auth[auth] = h
        end
        ids[#ids + 1] = id
        auths[#ids] = by_auth[auth]
      else
        ids[#ids + 1] = line
      end
    end
  end
  used = 0  -- ids sent
  handed = 0  -- ids reserved (once)
  exhausted = 0
  parked = 0
  if #ids == 0 and mode ~= "once" then
    static = wrk.format(method, template, headers, body)
  end
  first_us = nil  -- when this thread sent its first request ...
  last_us = nil  -- ... and when it was last ready to send one (delay hook only)
  math.randomseed(tid * 7919 + os.time())
end

function delay()
  -- called once per connection before each request it sends, i.e. after its previous answer;
  -- "once" reserves the id here, so that a connection never finds the ids gone in request()
  last_us = now_us()
  if mode == "once" then
    if handed >= #ids then
      exhausted = 1
      parked = parked + 1
      if parked >= conns then
        wrk.thread:stop()  -- every connection of this thread has had its last answer
      end
      return 3600000
    end
    handed = handed + 1
  end
  return 0
end

function request()
  if not first_us then
    first_us = now_us()
  end
  if static then
    return static
  end
  local k
  if mode == "random" then
    k = math.random(#ids)
  elseif mode == "once" then
    if used >= handed then  -- no reservation: wrk's first check, or a reconnect after a socket error
      if handed >= #ids then
        return wrk.format("GET", "/health")  -- never repeat an id
      end
      handed = handed + 1
    end
    used = used + 1
    k = used
  else
    if used >= #ids then
      used = 0
    end
    used = used + 1
    k = used
  end
  return wrk.format(method, (template:gsub("{id}", ids[k])), auths[k] or headers, body)
end

function done(summary, latency, requests)
  -- the active window: from the first request sent to the last moment a connection was ready
  -- for another (wrk itself always runs for the whole -d, even when every thread has stopped)
  local used_total, exhausted_total, first, last = 0, 0, nil, nil
  for _, t in ipairs(threads) do
    used_total = used_total + (t:get("used") or 0)
    exhausted_total = exhausted_total + (t:get("exhausted") or 0)
    local f, l = t:get("first_us"), t:get("last_us")
    if f and (not first or f < first) then first = f end
    if l and (not last or l > last) then last = l end
  end
  local active = (first and last and last > first) and (last - first) or 0
  local e = summary.errors
  io.write(string.format(
    'BENCH_JSON {"duration_us":%d,"requests":%d,"bytes":%d,"connect":%d,"read":%d,"write":%d,"status":%d,' ..
    '"timeout":%d,"p50_us":%d,"p90_us":%d,"p99_us":%d,"p999_us":%d,"max_us":%d,"mean_us":%.1f,' ..
    '"ids_used":%d,"threads_exhausted":%d,"active_us":%d}\n',
    summary.duration, summary.requests, summary.bytes, e.connect, e.read, e.write, e.status, e.timeout,
    latency:percentile(50), latency:percentile(90), latency:percentile(99), latency:percentile(99.9),
    latency.max, latency.mean, used_total, exhausted_total, active))
end
