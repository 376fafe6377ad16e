-- GET /fhir/Patient/<id>, cycling over the ids of the loaded Patients.
-- usage: wrk ... -s bench/wrk/read.lua http://127.0.0.1:PORT -- bench/.work/read_paths.txt THREADS
local dir = debug.getinfo(1, "S").source:match("^@(.*/)") or "./"
dofile(dir .. "get_cycle.lua")
