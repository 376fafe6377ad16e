import cProfile, pstats, time, io
import httpx
from tests.service.access.conftest import DOCTOR, Record, as_professional
from tests.tokens import Tokens

async def test_profile(anonymous: httpx.AsyncClient, tokens: Tokens, record: Record) -> None:
    h = as_professional(tokens, DOCTOR)
    path = f"/fhir/DocumentReference/{record.documents['lab']}"
    for _ in range(20):
        await anonymous.get(path, headers=h)
    pr = cProfile.Profile(); t = time.perf_counter(); pr.enable()
    for _ in range(200):
        r = await anonymous.get(path, headers=h)
    pr.disable(); print("READ per req ms", (time.perf_counter()-t)/200*1000, r.status_code)
    s = io.StringIO(); pstats.Stats(pr, stream=s).sort_stats("cumulative").print_stats(35); print(s.getvalue()[:6000])
    t = time.perf_counter()
    for _ in range(100):
        r = await anonymous.get("/fhir/DocumentReference", params={"patient": record.patient_id}, headers=h)
    print("SEARCH per req ms", (time.perf_counter()-t)/100*1000, r.status_code)
