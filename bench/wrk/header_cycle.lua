-- GET a list of (header value, path) pairs in turn, each request with its own value of one
-- header: a patient's portal session cookie ("Cookie: carnet_portal=<key>") or a patient's
-- bearer token ("Authorization: Bearer <token>"), so that a run rotates over the patients
-- as get_cycle.lua rotates over paths. The file (one "VALUE<TAB>PATH" per line) is written
-- by bench/run_portal.py into bench/.work/ and deleted at the end of the run; the values are
-- never on the command line. Each thread starts at its own offset.
-- Any status but 200 counts as an error (unexpected_status): a portal page that lost its
-- session answers a 303 to the login, which wrk alone would count as a success.
-- usage: wrk ... -s header_cycle.lua URL -- FILE THREADS HEADER [ACCEPT]
local dir = debug.getinfo(1, "S").source:match("^@(.*/)") or "./"
local lib = dofile(dir .. "lib.lua")

setup = lib.setup
done = lib.done

local values, paths, n, i, header

function init(args)
  values, paths = {}, {}
  for _, line in ipairs(lib.load_lines(args[1])) do
    local value, path = line:match("^([^\t]+)\t(.+)$")
    assert(value and path, "not VALUE<TAB>PATH: " .. line)
    values[#values + 1] = value
    paths[#paths + 1] = path
  end
  n = #paths
  local nthreads = tonumber(args[2] or "1")
  i = math.floor(n * (tonumber(tid) or 0) / nthreads)
  header = args[3]
  wrk.headers["Accept"] = args[4] or "text/html"
  lib.expect_status(200)
end

function request()
  i = i + 1
  if i > n then i = 1 end
  wrk.headers[header] = values[i]
  return wrk.format("GET", paths[i])
end
