-- Hand leased jobs back, ready at once at the head of their priority, without
-- counting the attempt (field `u` counts reservations handed back).
-- ARGV: pairs of id, lease token. Returns 1 (held) or 0 (lost) per pair.
local out = {}
local n = 0
for i = 1, #ARGV, 2 do
  local id, token = ARGV[i], ARGV[i + 1]
  if held(id, token) then
    redis.call('ZREM', LEASES, id)
    redis.call('HINCRBY', JOBS, 'u:' .. id, 1)
    push_ready(id, redis.call('HGET', JOBS, 'pr:' .. id) or '0', true)
    n = n + 1
    out[#out + 1] = 1
  else
    out[#out + 1] = 0
  end
end
if n > 0 then wake(n) end
return out
