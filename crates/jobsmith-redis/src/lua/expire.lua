-- Drop a leased job whose TTL passed, freeing its key and counting it.
-- ARGV: id, token. Returns 1 (held) or 0 (lost).
local id, token = ARGV[1], ARGV[2]
if not held(id, token) then return 0 end
redis.call('ZREM', LEASES, id)
free_key(id, redis.call('HGET', JOBS, 'k:' .. id))
drop_jobs({ id })
redis.call('INCR', B .. ':expired')
return 1
