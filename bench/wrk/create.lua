-- POST /fhir/Patient: a new Patient per request, each with a unique IPP identifier
-- urn:oid:1.2.250.1.999.1.1.1|9RRRTTNNNNNNNNN (R = run nonce, T = wrk thread, N = counter),
-- so that no two requests of any run send the same identifier and none collides with
-- the loaded Patients (whose values start with 1).
-- usage: wrk ... -s bench/wrk/create.lua http://127.0.0.1:PORT -- NONCE
local dir = debug.getinfo(1, "S").source:match("^@(.*/)") or "./"
local lib = dofile(dir .. "lib.lua")

setup = lib.setup
done = lib.done

local counter = 0
local prefix
local families = {"Martin", "Bernard", "Dubois", "Thomas", "Robert", "Richard", "Petit", "Durand"}
local givens = {"Jean", "Marie", "Pierre", "Camille", "Louis", "Chloé", "Hugo", "Léa"}
local template = '{"resourceType":"Patient",' ..
  '"identifier":[{"system":"urn:oid:1.2.250.1.999.1.1.1","value":"%s"}],' ..
  '"name":[{"family":"%s","given":["%s"]}],"gender":"%s","birthDate":"%04d-%02d-%02d"}'

function init(args)
  local nonce = tonumber(args[1] or "0") % 1000
  prefix = string.format("9%03d%02d", nonce, (tonumber(tid) or 0) % 100)
  wrk.headers["Accept"] = "application/fhir+json"
  wrk.headers["Content-Type"] = "application/fhir+json"
  lib.authorize()
end

function request()
  counter = counter + 1
  local value = prefix .. string.format("%09d", counter)
  local k = counter % 8 + 1
  local body = string.format(template, value, families[k], givens[(counter * 3) % 8 + 1],
                             (counter % 2 == 0) and "female" or "male",
                             1930 + counter % 90, counter % 12 + 1, counter % 28 + 1)
  return wrk.format("POST", "/fhir/Patient", nil, body)
end
