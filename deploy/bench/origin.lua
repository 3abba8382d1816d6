-- Sends every request from the browser origin CORS allows in the benchmarks (lib.sh's
-- bench_origin): `wrk -H "Authorization: …" -s deploy/bench/origin.lua URL`.
wrk.headers["Origin"] = "https://app.hackitech.example"
