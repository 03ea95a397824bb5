"""`gateway.limits` counted in Redis (`gateway.limits.store`): every edge that names the same
store shares the counts. Each of a request's two calls is one Lua script, so two edges admit
exactly the limit between them."""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

from gateway_edge.limit_counts import TURN_LEASE_SECONDS, Count, LimitStoreDown, Taken, window
from gateway_edge.redis_link import RedisError, RedisLink

# KEYS: the counted windows, then the place sets. ARGV: how many windows, now, the lease's end,
# the token, the lease in seconds; (amount, seconds to keep, ceiling) per window; the most
# places per set. Returns each window's total, then -1 (over a ceiling), 0 (places taken) or
# the number of the set that was full.
_TAKE = """
local windows = tonumber(ARGV[1])
local totals = {}
local over = false
for i = 1, windows do
  local at = 5 + (i - 1) * 3
  local total = redis.call('INCRBY', KEYS[i], ARGV[at + 1])
  if total == tonumber(ARGV[at + 1]) then redis.call('EXPIRE', KEYS[i], ARGV[at + 2]) end
  totals[i] = total
  if total > tonumber(ARGV[at + 3]) then over = true end
end
local outcome = 0
if over then
  outcome = -1
else
  for j = windows + 1, #KEYS do
    redis.call('ZREMRANGEBYSCORE', KEYS[j], '-inf', ARGV[2])
    if redis.call('ZCARD', KEYS[j]) >= tonumber(ARGV[5 + windows * 3 + j - windows]) then
      for k = windows + 1, j - 1 do redis.call('ZREM', KEYS[k], ARGV[4]) end
      outcome = j - windows
      break
    end
    redis.call('ZADD', KEYS[j], ARGV[3], ARGV[4])
    redis.call('EXPIRE', KEYS[j], ARGV[5])
  end
end
totals[windows + 1] = outcome
return totals
"""
# KEYS: the charged windows, then the place sets. ARGV: how many windows, the token; (amount,
# seconds to keep) per window.
_GIVE_BACK = """
local windows = tonumber(ARGV[1])
for i = 1, windows do
  local total = redis.call('INCRBY', KEYS[i], ARGV[1 + i * 2])
  if total == tonumber(ARGV[1 + i * 2]) then redis.call('EXPIRE', KEYS[i], ARGV[2 + i * 2]) end
end
for j = windows + 1, #KEYS do redis.call('ZREM', KEYS[j], ARGV[2]) end
return 0
"""


class RedisCounts:
    """Counts in Redis, shared by every edge that names the same store."""

    def __init__(self, url: str) -> None:
        self._link = RedisLink(url)

    async def _run(self, script: str, keys: list[str], arguments: list[Any]) -> Any:
        try:
            return await self._link.run_script(script, keys, arguments)
        except RedisError as error:
            raise LimitStoreDown(str(error)) from None

    @staticmethod
    def _windows(counts: Sequence[Count], now: float) -> tuple[list[str], list[list[Any]]]:
        keys, arguments = [], []
        for count in counts:
            label, left = window(count.period, now)
            keys.append(f"clawgate:limit:{count.key}:{label}")
            arguments.append([count.amount, int(left) + 60, count.ceiling])
        return keys, arguments

    async def take(
        self, counts: Sequence[Count], places: Sequence[tuple[str, int]], token: str
    ) -> Taken:
        now = time.time()
        keys, per_window = self._windows(counts, now)
        arguments: list[Any] = [len(counts), now, now + TURN_LEASE_SECONDS, token]
        arguments.append(TURN_LEASE_SECONDS)
        for amount_keep_ceiling in per_window:
            arguments += amount_keep_ceiling
        keys += [f"clawgate:limit:{key}" for key, _ in places]
        arguments += [limit for _, limit in places]
        *totals, outcome = await self._run(_TAKE, keys, arguments)
        return Taken(totals, over=outcome == -1, full=outcome - 1 if outcome > 0 else None)

    async def give_back(self, charges: Sequence[Count], places: Sequence[str], token: str) -> None:
        keys, per_window = self._windows(charges, time.time())
        arguments: list[Any] = [len(charges), token]
        for amount, keep, _ in per_window:
            arguments += [amount, keep]
        keys += [f"clawgate:limit:{key}" for key in places]
        await self._run(_GIVE_BACK, keys, arguments)

    async def close(self) -> None:
        await self._link.close()
