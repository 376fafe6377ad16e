-- GET a list of paths in turn (one path per line in the file given after "--").
-- Used for read by id (bench/.work/read_paths.txt) and for the identifier search
-- (bench/.work/search_paths.txt); each thread starts at its own offset.
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
  wrk.headers["Accept"] = "application/fhir+json"
  lib.authorize()
end

function request()
  i = i + 1
  if i > n then i = 1 end
  return wrk.format("GET", paths[i])
end
