-- The request of one `make bench-webapp` workload, and its results as one JSON line for the
-- runner. WRK_METHOD (default GET) and WRK_BODY (a JSON document, sent as application/json)
-- choose the request.
wrk.method = os.getenv("WRK_METHOD") or "GET"
local body = os.getenv("WRK_BODY")
if body and body ~= "" then
  wrk.body = body
  wrk.headers["Content-Type"] = "application/json"
end

-- wrk counts a non-2xx answer as a completed request and a status error: only 2xx answers
-- count as requests here, everything else as errors.
function done(summary, latency, requests)
  local e = summary.errors
  local ok = summary.requests - e.status
  local p50, p99 = "null", "null"
  if summary.requests > 0 then
    p50 = string.format("%.3f", latency:percentile(50) / 1000)
    p99 = string.format("%.3f", latency:percentile(99) / 1000)
  end
  io.write(string.format(
    '{"requests": %d, "errors": %d, "seconds": %.6f, "p50_ms": %s, "p99_ms": %s}\n',
    ok, e.status + e.connect + e.read + e.write + e.timeout, summary.duration / 1e6, p50, p99))
end
