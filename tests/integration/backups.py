"""Data of every type for backup tests, and a comparison of two clusters' contents."""

from __future__ import annotations

import random
from typing import Any

import redis

from redisops import acl
from redisops.backup.digest import key_digest
from redisops.client import Endpoint, connect_cluster
from redisops.local.settings import HOST
from redisops.local.twin import Twin


def cluster(twin: Twin, decode: bool = True) -> redis.RedisCluster:
    return connect_cluster(
        [Endpoint(host=HOST, port=twin.settings().ports[0])],
        twin.client_tls(acl.ADMIN),
        twin.credentials(acl.ADMIN),
        decode_responses=decode,
        timeout=30.0,
    )


def fill(twin: Twin, keys: int, seed: int = 1) -> int:
    """About `keys` keys across every data type; returns how many were written."""
    rng = random.Random(seed)
    client = cluster(twin)
    written = 0
    try:
        pipe = client.pipeline()
        for i in range(keys):
            kind = i % 8
            if kind == 0:
                pipe.set(f"str:{i}", rng.randbytes(rng.randint(1, 200)).hex())
            elif kind == 1:
                pipe.set(f"ttl:{i}", f"v{i}", ex=3600)
            elif kind == 2:
                pipe.hset(f"hash:{i}", mapping={f"f{j}": str(j) for j in range(rng.randint(1, 8))})
            elif kind == 3:
                pipe.rpush(f"list:{i}", *[str(j) for j in range(rng.randint(1, 8))])
            elif kind == 4:
                pipe.sadd(f"set:{i}", *[str(rng.random()) for _ in range(rng.randint(1, 8))])
            elif kind == 5:
                pipe.zadd(f"zset:{i}", {f"m{j}": rng.random() for j in range(rng.randint(1, 8))})
            elif kind == 6:
                pipe.set(f"int:{i}", str(i))
            else:
                pipe.hset(f"big:{i}", mapping={f"k{j}": "x" * 100 for j in range(200)})
            written += 1
            if i % 2000 == 1999:
                pipe.execute()
        pipe.execute()
        for s in range(20):
            stream = f"stream:{s}"
            for j in range(50):
                client.xadd(stream, {"sender": f"agent{j % 3}", "n": str(j)})
            client.xgroup_create(stream, "workers", id="0")
            client.xreadgroup("workers", "c1", {stream: ">"}, count=7)
            written += 1
    finally:
        client.close()
    return written


def total_keys(twin: Twin) -> int:
    client = cluster(twin)
    try:
        sizes: Any = client.dbsize(target_nodes=redis.RedisCluster.PRIMARIES)
    finally:
        client.close()
    return sum(sizes.values()) if isinstance(sizes, dict) else int(sizes)


def differences(source: Twin, target: Twin, sample: int = 400, seed: int = 3) -> list[str]:
    """Keys whose logical digest differs, over a random sample of the source's keys
    (streams with consumer groups always included)."""
    src = cluster(source, decode=False)
    dst = cluster(target, decode=False)
    rng = random.Random(seed)
    try:
        keys: list[bytes] = [f"stream:{s}".encode() for s in range(20)]
        for node in src.get_primaries():
            for key in src.scan_iter(count=1000, target_nodes=node):
                if rng.random() < sample / 20000:
                    keys.append(key)
        return [
            k.decode(errors="replace") for k in keys if key_digest(src, k) != key_digest(dst, k)
        ]
    finally:
        src.close()
        dst.close()
