-- GET /fhir/Patient?identifier=urn:oid:1.2.250.1.999.1.1.1|<value>, cycling over the
-- identifiers of the loaded Patients (each matches exactly one resource).
-- usage: wrk ... -s bench/wrk/search.lua http://127.0.0.1:PORT -- bench/.work/search_paths.txt THREADS
local dir = debug.getinfo(1, "S").source:match("^@(.*/)") or "./"
dofile(dir .. "get_cycle.lua")
