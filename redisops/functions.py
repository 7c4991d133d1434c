"""The platform's Redis Functions: one Lua library, loaded by `redisops reconcile`.

Clients never send Lua. The `publisher` role may `FCALL` (run a loaded function), not
`EVAL`, `EVALSHA`, `SCRIPT` or `FUNCTION LOAD`: a script of the caller's own could loop
forever (a shard frozen; the publisher cannot `SCRIPT KILL`), declare `allow-oom` and
write past maxmemory, or forge log lines with `redis.log`. `FCALL` with no keys passes
every key check, so what it can run is exactly what is loaded: this library, which only
the `operator` (reconcile) and `admin` may load.

Functions are part of the dataset: they replicate to replicas and persist in RDB and AOF,
so a restarted node, a promoted replica and a backup keep them. Reconcile loads the
library on every primary where `FUNCTION LIST` shows it missing or different: a new
cluster, a node that joined empty, a cluster restored from an older backup, an upgrade.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

LIBRARY = "redisplatform"
PUBLISH_ONCE = "publish_once"

# publish_once: the SSE proxy's exactly-once POST (sse_proxy.idempotency).
# KEYS[1] the stream, KEYS[2] its idempotency record (same cluster slot).
# ARGV[1] the record's lifetime (s), ARGV[2] "<fingerprint> <nonce>", ARGV[3] MAXLEN or '',
# ARGV[4] MINID or '', ARGV[5...] field, value, field, value, ...
# Returns {1, id} for a new entry, {0, record} when the key was used before.
# Registered without flags: not allow-oom (refused over maxmemory, like XADD), not
# no-writes. Every command it calls is checked against the caller's ACL rules.
CODE = f"""#!lua name={LIBRARY}

local function publish_once(keys, args)
  local record = redis.call('GET', keys[2])
  if record then
    return {{0, record}}
  end
  local window = tonumber(args[1])
  if not window or window < 1 or window % 1 ~= 0 or #args < 6 or #args % 2 ~= 0 then
    return redis.error_reply('ERR {PUBLISH_ONCE}: expected a lifetime in seconds, a mark, ' ..
      'MAXLEN, MINID, then field value pairs')
  end
  local xadd = {{'XADD', keys[1]}}
  if args[3] ~= '' then
    xadd[#xadd + 1] = 'MAXLEN'; xadd[#xadd + 1] = '~'; xadd[#xadd + 1] = args[3]
  elseif args[4] ~= '' then
    xadd[#xadd + 1] = 'MINID'; xadd[#xadd + 1] = '~'; xadd[#xadd + 1] = args[4]
  end
  xadd[#xadd + 1] = '*'
  for i = 5, #args do
    xadd[#xadd + 1] = args[i]
  end
  -- Every right first: a write refused after the XADD would leave an entry with no record.
  if not (redis.acl_check_cmd('XADD', keys[1], '*', 'f', 'v')
      and redis.acl_check_cmd('XTRIM', keys[1], 'MINID', '~', '0-1')
      and redis.acl_check_cmd('SET', keys[2], 'v', 'EX', '1')) then
    return redis.error_reply('NOPERM the user may not XADD to ' .. keys[1] ..
      ' or write its idempotency record ' .. keys[2])
  end
  local id = redis.call(unpack(xadd))
  if args[3] ~= '' and args[4] ~= '' then
    redis.call('XTRIM', keys[1], 'MINID', '~', args[4])
  end
  redis.call('SET', keys[2], id .. ' ' .. args[2], 'EX', window)
  return {{1, id}}
end

redis.register_function{{function_name='{PUBLISH_ONCE}', callback=publish_once}}
"""


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def libraries(listing: Iterable[Any]) -> dict[str, str | None]:
    """Library name -> code (None when listed without WITHCODE) from a `FUNCTION LIST`
    reply, as redis-py returns it (a dict per library, or RESP2's flat lists)."""
    found: dict[str, str | None] = {}
    for entry in listing:
        if isinstance(entry, Mapping):
            fields = {_text(k): v for k, v in entry.items()}
        else:
            items = list(entry)
            fields = {_text(items[i]): items[i + 1] for i in range(0, len(items) - 1, 2)}
        code = fields.get("library_code")
        found[_text(fields["library_name"])] = None if code is None else _text(code)
    return found
