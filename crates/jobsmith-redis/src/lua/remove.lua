-- Delete jobs held by a migration's take, freeing their idempotency keys.
-- ARGV: pairs of id, hold token. Returns 1 (held) or 0 (lost) per pair.
local out = {}
local gone = {}
for i = 1, #ARGV, 2 do
  local id, token = ARGV[i], ARGV[i + 1]
  if held(id, token) then
    free_key(id, redis.call('HGET', JOBS, 'k:' .. id))
    redis.call('ZREM', LEASES, id)
    gone[#gone + 1] = id
    out[#out + 1] = 1
  else
    out[#out + 1] = 0
  end
end
drop_jobs(gone)
return out
