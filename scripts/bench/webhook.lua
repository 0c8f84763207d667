-- wrk: POST a distinct lead to /v1/webhooks/webform each request.
--   wrk -t2 -c64 -d20s -s scripts/bench/webhook.lua http://127.0.0.1:8080
local n = 0
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"

request = function()
  n = n + 1
  local body = string.format(
    '{"name":"客户%d","phone":"139%08d","email":"lead%d@example.cn","company":"某某科技有限公司"}',
    n, n % 100000000, n)
  return wrk.format(nil, "/v1/webhooks/webform", nil, body)
end

done = function(summary, latency, requests)
  local errors = summary.errors.status + summary.errors.connect + summary.errors.read
    + summary.errors.write + summary.errors.timeout
  io.write(string.format("requests %d, errors %d, p50 %.2f ms, p99 %.2f ms\n",
    summary.requests, errors, latency:percentile(50) / 1000, latency:percentile(99) / 1000))
end
