-- wrk script: POST a fixed JSON body (env WRK_BODY), optional program header (env WRK_PROGRAMS:
-- requests cycle over that many program ids), and print a JSON summary at the end.
wrk.method = "POST"
wrk.body = os.getenv("WRK_BODY")
wrk.headers["Content-Type"] = "application/json"
local programs = tonumber(os.getenv("WRK_PROGRAMS") or "0")
local counter = 0

request = function()
  if programs > 0 then
    counter = counter + 1
    local headers = { ["Content-Type"] = "application/json",
                      ["X-Thunder-Program-Id"] = "bench-" .. (counter % programs) }
    return wrk.format(nil, nil, headers, wrk.body)
  end
  return wrk.format()
end

done = function(summary, latency, requests)
  local errors = summary.errors.connect + summary.errors.read + summary.errors.write
      + summary.errors.status + summary.errors.timeout
  io.write(string.format(
    'WRK_JSON {"requests": %d, "duration_us": %d, "errors": %d, "status_errors": %d, ' ..
    '"timeouts": %d, "p50_us": %d, "p90_us": %d, "p99_us": %d, "mean_us": %.1f}\n',
    summary.requests, summary.duration, errors, summary.errors.status, summary.errors.timeout,
    latency:percentile(50), latency:percentile(90), latency:percentile(99), latency.mean))
end
