-- Shared helpers for the Carnet wrk scripts (loaded with dofile by each script).
--
-- * threads are numbered in setup() so that each one starts at a different
--   place in the list of paths and builds unique identifiers;
-- * done() prints one machine-readable line, "BENCH_JSON {...}", that
--   bench/run_core.py parses: requests, duration, every error counter wrk
--   keeps (non-2xx/3xx status, connect, read, write, timeout) and latency
--   percentiles in microseconds;
-- * authorize() adds "Authorization: Bearer <token>" to every request when
--   bench/run_core.py passes a token in the CARNET_BENCH_TOKEN environment
--   variable (the operator app's, or in bench/run_documents.py a professional's;
--   every /fhir interaction but GET /fhir/metadata needs one; the floor app gets
--   none). It sets wrk.headers, which wrk.format() uses for
--   each scripted request.
-- * expect_status(code) makes a script count every response whose status is not
--   `code` (wrk itself only counts statuses >= 400): done() adds them to the
--   errors as "unexpected_status". It defines response(), so wrk hands each
--   response to Lua; scripts that do not call it keep wrk's fast path.

local M = {}
local thread_count = 0
local threads = {}

function M.setup(thread)
  thread:set("tid", thread_count)
  thread_count = thread_count + 1
  threads[#threads + 1] = thread
end

function M.expect_status(code)
  unexpected = 0
  response = function(status, headers, body)
    if status ~= code then unexpected = unexpected + 1 end
  end
end

function M.authorize()
  local token = os.getenv("CARNET_BENCH_TOKEN")
  if token and token ~= "" then
    wrk.headers["Authorization"] = "Bearer " .. token
  end
end

function M.load_lines(path)
  local lines = {}
  local f = assert(io.open(path, "r"), "cannot open " .. tostring(path))
  for line in f:lines() do
    if line ~= "" then lines[#lines + 1] = line end
  end
  f:close()
  assert(#lines > 0, "no lines in " .. path)
  return lines
end

function M.done(summary, latency, requests)
  local e = summary.errors
  local unexpected = 0
  for _, thread in ipairs(threads) do
    unexpected = unexpected + (tonumber(thread:get("unexpected")) or 0)
  end
  local parts = {
    string.format('"requests":%d', summary.requests),
    string.format('"duration_us":%d', summary.duration),
    string.format('"bytes":%d', summary.bytes),
    string.format('"errors":{"status":%d,"connect":%d,"read":%d,"write":%d,"timeout":%d,' ..
                  '"unexpected_status":%d}',
                  e.status, e.connect, e.read, e.write, e.timeout, unexpected),
    string.format('"latency_us":{"mean":%.1f,"max":%d,"p50":%d,"p75":%d,"p90":%d,"p99":%d,"p999":%d}',
                  latency.mean, latency.max, latency:percentile(50), latency:percentile(75),
                  latency:percentile(90), latency:percentile(99), latency:percentile(99.9)),
  }
  io.write("BENCH_JSON {" .. table.concat(parts, ",") .. "}\n")
end

return M
