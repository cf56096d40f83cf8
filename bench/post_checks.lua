-- wrk script: POST 50 ticket checks per request, every id unique across threads and runs.
-- BENCH_RUN (environment) keeps the ids of separate runs apart.
local run = tonumber(os.getenv("BENCH_RUN") or "1")
local key = os.getenv("BENCH_API_KEY") or "bench-key"
local counter = 0
local n = 0
tid = 0  -- a global: setup() sets it in each thread's own Lua state

function setup(thread)
  n = n + 1
  thread:set("tid", n)
end

local row = '{"ticket_check_id":%d,"movement_id":%d,"ticket_id":%d,"barcode":"0%d",' ..
  '"access_time":"2024-03-14 19:21:07","check_flow":"IN","result":"OK","failure_reason":"NO_FAIL"}'

function request()
  counter = counter + 1
  local base = run * 100000000000 + tid * 10000000000 + counter * 50
  local parts = {}
  for i = 1, 50 do
    local id = base + i
    parts[i] = string.format(row, id, id + 7, id + 9, id)
  end
  return wrk.format("POST", nil, {["Content-Type"] = "application/json", ["x-api-key"] = key},
                    "[" .. table.concat(parts, ",") .. "]")
end
