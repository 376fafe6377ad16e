-- GET a list of paths in turn (one path per line in the file given after "--").
-- Used for read by id (bench/.work/read_paths.txt) and for the identifier search
-- (bench/.work/search_paths.txt); each thread starts at its own offset.
-- usage: wrk ... -s get_cycle.lua URL -- PATHS_FILE THREADS [ACCEPT]
-- ACCEPT (default application/fhir+json) is the Accept header, e.g. application/pdf for
-- ITI-68's raw document bytes.
local dir = debug.getinfo(1, "S").source:match("^@(.*/)") or "./"
local lib = dofile(dir .. "lib.lua")

setup = lib.setup
done = lib.done

local paths, n, i

function init(args)
  paths = lib.load_lines(args[1])
  n = #paths
  local nthreads = tonumber(args[2] or "1")
  i = math.floor(n * (tonumber(tid) or 0) / nthreads)
  wrk.headers["Accept"] = args[3] or "application/fhir+json"
  lib.authorize()
end

function request()
  i = i + 1
  if i > n then i = 1 end
  return wrk.format("GET", paths[i])
end
