-- wrk script for bench/load.py. Everything comes from the environment, because wrk's setup/done environment never
-- sees the "--" arguments:
--   BENCH_MODE       get | bc | poll
--   BENCH_RESULT     file that done() writes (one JSON object)
--   BENCH_AUTH       Authorization header value (bc, poll)
--   BENCH_BODY       form body (bc)
--   BENCH_IDS_OUT    bc: each thread appends the auth_req_ids it receives to BENCH_IDS_OUT.<thread index>
--   BENCH_IDS        poll: file with one auth_req_id a line; thread i polls lines i, i+T, i+2T, ...
--   BENCH_GAP        poll: seconds between two polls of one request (the interval and a margin)
--   BENCH_STATE      poll: the requests being polled and when, read at start and written at the end
--   BENCH_THREADS    the -t given to wrk

local mode = os.getenv("BENCH_MODE") or "get"
local nthreads = tonumber(os.getenv("BENCH_THREADS") or "1")

local threads = {}
local counter = 0

function setup(thread)
  thread:set("idx", counter)
  counter = counter + 1
  table.insert(threads, thread)
end

-- Per-thread answer counters (read back in done()).
ok = 0
pending = 0
slow_down = 0
other = 0

local function classify(status, body)
  if status == 200 then
    ok = ok + 1
  elseif status == 400 and string.find(body, '"authorization_pending"', 1, true) then
    pending = pending + 1
  elseif status == 400 and string.find(body, '"slow_down"', 1, true) then
    slow_down = slow_down + 1
  else
    other = other + 1
  end
end

if mode == "bc" then
  local out
  local body = os.getenv("BENCH_BODY")
  local headers = {
    ["Authorization"] = os.getenv("BENCH_AUTH"),
    ["Content-Type"] = "application/x-www-form-urlencoded",
  }
  local req

  function init(args)
    out = io.open(os.getenv("BENCH_IDS_OUT") .. "." .. idx, "a")
    out:setvbuf("line")
    req = wrk.format("POST", nil, headers, body)
  end

  function request()
    return req
  end

  function response(status, hdrs, resp_body)
    classify(status, resp_body)
    if status == 200 then
      local id = string.match(resp_body, '"auth_req_id": *"([^"]+)"')
      if id then
        out:write(id, "\n")
      end
    end
  end
elseif mode == "poll" then
  -- Each thread polls its share of the pool (lines i, i+T, ...) like agents that honour the interval: it polls the
  -- request it polled longest ago once GAP seconds have passed, and otherwise takes a request it has not polled yet,
  -- so the set of requests being polled grows until the server is saturated and each is polled every ~GAP seconds.
  -- The ring of requests being polled, with their last poll times (CLOCK_MONOTONIC), is carried from run to run in
  -- BENCH_STATE. When no fresh request is left, the oldest is polled early (counted as "early").
  local ffi = require("ffi")
  ffi.cdef [[
    typedef struct { long tv_sec; long tv_nsec; } bench_timespec;
    int clock_gettime(int clk_id, bench_timespec *tp);
  ]]
  local ts = ffi.new("bench_timespec")
  local function now()
    ffi.C.clock_gettime(1, ts) -- CLOCK_MONOTONIC, the clock of Python's time.monotonic()
    return tonumber(ts.tv_sec) + tonumber(ts.tv_nsec) * 1e-9
  end

  local gap = tonumber(os.getenv("BENCH_GAP") or "5.3")
  local headers = {
    ["Authorization"] = os.getenv("BENCH_AUTH"),
    ["Content-Type"] = "application/x-www-form-urlencoded",
  }
  local prefix = "grant_type=urn%3Aopenid%3Aparams%3Agrant-type%3Aciba&auth_req_id="
  local fresh = {}
  local next_fresh = 1
  ring = {}
  last = {}
  rpos = 1
  early = 0
  grown = 0

  function init(args)
    local taken = {}
    local state = os.getenv("BENCH_STATE")
    local f = state and io.open(state, "r")
    if f then
      local section = nil
      for line in f:lines() do
        local t_idx, t_rpos = string.match(line, "^R (%d+) (%d+)$")
        if t_idx then
          section = tonumber(t_idx)
          if section == idx then
            rpos = tonumber(t_rpos)
          end
        else
          local t, id = string.match(line, "^(%S+) (%S+)$")
          if id then
            taken[id] = true
            if section == idx then
              table.insert(ring, id)
              table.insert(last, tonumber(t))
            end
          end
        end
      end
      f:close()
    end
    if rpos > #ring then
      rpos = 1
    end
    local line_no = 0
    for line in io.lines(os.getenv("BENCH_IDS")) do
      if line ~= "" then
        if line_no % nthreads == idx and not taken[line] then
          table.insert(fresh, line)
        end
        line_no = line_no + 1
      end
    end
  end

  function request()
    local t = now()
    local id
    local n = #ring
    if n > 0 and t - last[rpos] >= gap then
      id = ring[rpos]
      last[rpos] = t
      rpos = rpos % n + 1
    elseif next_fresh <= #fresh then
      -- A new request joins the ring just before the oldest: it is the newest, polled again after all the others.
      id = fresh[next_fresh]
      next_fresh = next_fresh + 1
      grown = grown + 1
      table.insert(ring, rpos, id)
      table.insert(last, rpos, t)
      rpos = rpos % (n + 1) + 1
    else
      id = ring[rpos]
      last[rpos] = t
      rpos = rpos % n + 1
      early = early + 1
    end
    return wrk.format("POST", nil, headers, prefix .. id)
  end

  function response(status, hdrs, resp_body)
    classify(status, resp_body)
  end
end

function done(summary, latency, requests)
  local t = { ok = 0, pending = 0, slow_down = 0, other = 0, early = 0, grown = 0 }
  local ring_size = 0
  local state = mode == "poll" and os.getenv("BENCH_STATE") and io.open(os.getenv("BENCH_STATE"), "w")
  for i, thread in ipairs(threads) do
    for key, _ in pairs(t) do
      t[key] = t[key] + (thread:get(key) or 0)
    end
    if mode == "poll" then
      local ring, last = thread:get("ring"), thread:get("last")
      ring_size = ring_size + #ring
      if state then
        state:write("R ", i - 1, " ", thread:get("rpos"), "\n")
        for j = 1, #ring do
          state:write(string.format("%.6f", last[j]), " ", ring[j], "\n")
        end
      end
    end
  end
  if state then
    state:close()
  end
  local e = summary.errors
  local f = io.open(os.getenv("BENCH_RESULT"), "w")
  f:write(string.format(
    '{"duration_us": %d, "requests": %d, "bytes": %d, '
      .. '"errors": {"connect": %d, "read": %d, "write": %d, "status": %d, "timeout": %d}, '
      .. '"latency_us": {"min": %d, "mean": %.1f, "max": %d, "p50": %d, "p90": %d, "p99": %d, "p999": %d}, '
      .. '"answers": {"ok": %d, "pending": %d, "slow_down": %d, "other": %d}, '
      .. '"early": %d, "grown": %d, "ring": %d}',
    summary.duration, summary.requests, summary.bytes,
    e.connect, e.read, e.write, e.status, e.timeout,
    latency.min, latency.mean, latency.max,
    latency:percentile(50), latency:percentile(90), latency:percentile(99), latency:percentile(99.9),
    t.ok, t.pending, t.slow_down, t.other,
    t.early, t.grown, ring_size
  ))
  f:close()
end
