-- Enqueue a bounded batch of jobs into one queue.
-- ARGV: n, then per job: id, payload, priority, run_at (ms), expires_at (ms, 0 = never), idempotency key ('' = none).
-- Returns each job's id: its own, or the id of the job that holds its key.
local now = clock()
local n = tonumber(ARGV[1])
local out = {}
local ready = {}   -- priority -> ids, appended in one RPUSH per slice
local made_ready = 0
for i = 0, n - 1 do
  local base = 2 + i * 6
  local id, payload, prio = ARGV[base], ARGV[base + 1], ARGV[base + 2]
  local run_at, expires, key = tonumber(ARGV[base + 3]), ARGV[base + 4], ARGV[base + 5]
  local owner = false
  if key ~= '' then
    owner = redis.call('GET', IDEM .. key)
    if not owner then
      redis.call('SET', IDEM .. key, id)
    end
  end
  if owner then
    out[#out + 1] = owner
  else
    local h = JOB .. id
    local fields = { 'p', payload, 'pr', prio }
    if expires ~= '0' then fields[#fields + 1] = 'x'; fields[#fields + 1] = expires end
    if key ~= '' then fields[#fields + 1] = 'k'; fields[#fields + 1] = key end
    local scheduled = run_at > now
    if not scheduled then fields[#fields + 1] = 'r'; fields[#fields + 1] = run_at end
    -- Every field is new unless the job exists: enqueueing the same envelope
    -- twice (a retried call) rewrites the same values and queues it once.
    if redis.call('HSET', h, unpack(fields)) == #fields / 2 then
      if scheduled then
        redis.call('ZADD', SCHEDULED, run_at, id)
      else
        local list = ready[prio]
        if not list then list = {}; ready[prio] = list end
        list[#list + 1] = id
        made_ready = made_ready + 1
      end
    end
    out[#out + 1] = id
  end
end
for prio, ids in pairs(ready) do
  each_slice('RPUSH', READY .. prio, ids)
  redis.call('ZADD', PRIOS, prio, prio)
end
if made_ready > 0 then
  wake(made_ready)
end
return out
