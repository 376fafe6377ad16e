-- ITI-65 Provide Document Bundle: POST /fhir with a pre-generated transaction Bundle per
-- request (bench/run_documents.py writes them, one JSON Bundle per line, a file per wrk
-- thread: PREFIX-<thread>.ndjson). Every Bundle holds a fresh masterIdentifier and its own
-- 20 kB PDF, and each thread sends its own slice once, in order: no two requests of a run
-- (nor of the warm-up, which gets other files) file the same document. Should a thread
-- send more requests than it has Bundles, it starts over (re-sends are answered from the
-- earlier filing, which would flatter the figure): run_documents.py compares wrk's request
-- count with the number of Bundles and refuses such a figure.
-- Any status but 200 counts as an error (unexpected_status), on top of wrk's >= 400.
-- usage: wrk ... -s bench/wrk/iti65.lua http://127.0.0.1:PORT -- PREFIX
local dir = debug.getinfo(1, "S").source:match("^@(.*/)") or "./"
local lib = dofile(dir .. "lib.lua")

setup = lib.setup
done = lib.done

local bodies, n, i

function init(args)
  bodies = lib.load_lines(args[1] .. "-" .. tostring(tonumber(tid) or 0) .. ".ndjson")
  n = #bodies
  i = 0
  wrk.headers["Accept"] = "application/fhir+json"
  wrk.headers["Content-Type"] = "application/fhir+json"
  lib.authorize()
  lib.expect_status(200)
end

function request()
  i = i + 1
  if i > n then i = 1 end
  return wrk.format("POST", "/fhir", nil, bodies[i])
end
