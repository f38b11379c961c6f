-- Extend leases to ARGV[1] ms from now. ARGV: lease (ms), then pairs of id, token.
-- Returns 1 (held) or 0 (lost) per pair.
local until_ms = clock() + tonumber(ARGV[1])
local out = {}
for i = 2, #ARGV, 2 do
  local id, token = ARGV[i], ARGV[i + 1]
  if held(id, token) then
    redis.call('ZADD', LEASES, until_ms, id)
    out[#out + 1] = 1
  else
    out[#out + 1] = 0
  end
end
return out
