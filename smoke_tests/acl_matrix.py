"""The least-privilege contract, written independently of `redisops.acl`.

Each probe says what one role must or must not be able to do. `run` probes execute the
real command as that role (only where that is harmless whether or not it is allowed);
`dryrun` probes ask `ACL DRYRUN`, for commands that would do damage if the rule were
wrong. The smoke suite checks every probe on the live cluster; `tests/` checks them
against a server loaded with the rendered ACL file.

Placeholders: {stream} a stream the platform serves, {outside} a key outside every
pattern, {smoke} a key of the smoke suite's own, {record} the SSE proxy's idempotency
record of {stream} for the Idempotency-Key `acl-probe` (same slot as {stream}).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from redisops import acl, functions


@dataclass(frozen=True)
class Probe:
    role: str
    command: tuple[str, ...]
    allowed: bool
    how: Literal["run", "dryrun"]

    def resolve(self, stream: str, outside: str, smoke: str) -> tuple[str, ...]:
        values = {
            "{stream}": stream,
            "{outside}": outside,
            "{smoke}": smoke,
            "{record}": acl.idempotency_key(stream, PROBE_IDEMPOTENCY_KEY),
        }
        return tuple(values.get(arg, arg) for arg in self.command)

    @property
    def key_index(self) -> int | None:
        """Position of the key the command touches (to send it to the right node)."""
        for i, arg in enumerate(self.command):
            if arg in PLACEHOLDERS:
                return i
        return None

    @property
    def label(self) -> str:
        verb = "may" if self.allowed else "may not"
        return f"{self.role} {verb} {' '.join(self.command)} ({self.how})"


PLACEHOLDERS = ("{stream}", "{outside}", "{smoke}", "{record}")
PROBE_IDEMPOTENCY_KEY = "acl-probe"
# The record of a stream outside every pattern: the publisher may not touch it either.
OUTSIDE_RECORD = "idempotency:{acl-probe:outside}:acl-probe:outside:acl-probe"
NO_SCRIPT = "0" * 40  # an EVALSHA digest; DRYRUN checks rights, not whether it is loaded
# A script that asks to run past maxmemory (with noeviction: until the node is OOM-killed).
ALLOW_OOM = "#!lua flags=allow-oom\nreturn 1"
PUBLISH_ONCE = functions.PUBLISH_ONCE


def _allow(role: str, how: Literal["run", "dryrun"], *command: str) -> Probe:
    return Probe(role, command, True, how)


def _deny(role: str, how: Literal["run", "dryrun"], *command: str) -> Probe:
    return Probe(role, command, False, how)


# Commands only admin may run. Always dry runs: a wrong rule must not flush data.
ADMIN_ONLY: tuple[tuple[str, ...], ...] = (
    ("CONFIG", "SET", "maxmemory-policy", "noeviction"),
    ("CONFIG", "GET", "maxmemory"),
    ("FLUSHALL",),
    ("FLUSHDB",),
    ("DEBUG", "SLEEP", "0"),
    ("SHUTDOWN", "NOSAVE"),
    ("ACL", "SETUSER", "intruder", "on", ">intruder-password", "+@all", "~*"),
    ("ACL", "DELUSER", "reader"),
    ("MODULE", "LIST"),
    ("KEYS", "*"),
    ("MONITOR",),
    # Lua of one's own: a busy loop freezes a shard, allow-oom writes past maxmemory,
    # redis.log forges log lines. The platform's Lua is one library that reconcile loads.
    ("EVAL", "return 1", "0"),
    ("EVAL", ALLOW_OOM, "0"),
    ("EVALSHA", NO_SCRIPT, "0"),
    ("EVAL_RO", "return 1", "0"),
    ("SCRIPT", "LOAD", "return 1"),
    ("SCRIPT", "FLUSH"),
    ("FUNCTION", "DELETE", functions.LIBRARY),
    ("FUNCTION", "FLUSH"),
    ("FUNCTION", "RESTORE", "x"),
)

NON_ADMIN = tuple(r for r in acl.ROLES if r != acl.ADMIN)

PROBES: tuple[Probe, ...] = (
    # admin: everything
    _allow(acl.ADMIN, "run", "PING"),
    _allow(acl.ADMIN, "run", "GET", "{outside}"),
    *(_allow(acl.ADMIN, "dryrun", *cmd) for cmd in ADMIN_ONLY),
    # nobody else: configuration, flushing, debugging, shutting down, managing users
    *(_deny(role, "dryrun", *cmd) for role in NON_ADMIN for cmd in ADMIN_ONLY),
    # operator: cluster management and resharding, no data commands
    _allow(acl.OPERATOR, "run", "CLUSTER", "INFO"),
    _allow(acl.OPERATOR, "run", "INFO", "replication"),
    _allow(acl.OPERATOR, "dryrun", "CLUSTER", "FAILOVER"),
    _allow(acl.OPERATOR, "dryrun", "CLUSTER", "ADDSLOTS", "1"),
    _allow(acl.OPERATOR, "dryrun", "ACL", "LOAD"),
    _allow(acl.OPERATOR, "dryrun", "MIGRATE", "127.0.0.1", "1", "", "0", "1000", "KEYS", "k"),
    # operator: loads the platform's function library (reconcile), runs no function
    _allow(acl.OPERATOR, "dryrun", "FUNCTION", "LOAD", "REPLACE", functions.CODE),
    _allow(acl.OPERATOR, "run", "FUNCTION", "LIST", "LIBRARYNAME", functions.LIBRARY),
    _deny(acl.OPERATOR, "dryrun", "FCALL", PUBLISH_ONCE, "2", "{stream}", "{record}"),
    _deny(acl.OPERATOR, "dryrun", "FUNCTION", "KILL"),
    _deny(acl.OPERATOR, "run", "GET", "{outside}"),
    _deny(acl.OPERATOR, "run", "XRANGE", "{stream}", "-", "+", "COUNT", "1"),
    _deny(acl.OPERATOR, "dryrun", "SET", "{outside}", "x"),
    _deny(acl.OPERATOR, "dryrun", "XADD", "{stream}", "*", "probe", "x"),
    # replication: the replication handshake only
    _allow(acl.REPLICATION, "dryrun", "PSYNC", "?", "-1"),
    _allow(acl.REPLICATION, "dryrun", "REPLCONF", "listening-port", "1"),
    _allow(acl.REPLICATION, "run", "PING"),
    _deny(acl.REPLICATION, "run", "INFO"),
    _deny(acl.REPLICATION, "run", "GET", "{outside}"),
    _deny(acl.REPLICATION, "run", "XRANGE", "{stream}", "-", "+", "COUNT", "1"),
    _deny(acl.REPLICATION, "run", "CLUSTER", "NODES"),
    # backup: snapshots and topology, no key access
    _allow(acl.BACKUP, "dryrun", "SYNC"),
    _allow(acl.BACKUP, "run", "INFO", "server"),
    _allow(acl.BACKUP, "run", "DBSIZE"),
    _allow(acl.BACKUP, "run", "CLUSTER", "NODES"),
    _allow(acl.BACKUP, "run", "CLUSTER", "SLOTS"),
    _deny(acl.BACKUP, "run", "GET", "{outside}"),
    _deny(acl.BACKUP, "run", "XRANGE", "{stream}", "-", "+", "COUNT", "1"),
    _deny(acl.BACKUP, "run", "SCAN", "0"),
    _deny(acl.BACKUP, "dryrun", "BGSAVE"),
    _deny(acl.BACKUP, "dryrun", "XADD", "{stream}", "*", "probe", "x"),
    # monitoring: statistics, never data
    _allow(acl.MONITORING, "run", "INFO"),
    _allow(acl.MONITORING, "run", "PING"),
    _allow(acl.MONITORING, "run", "CLUSTER", "INFO"),
    _allow(acl.MONITORING, "run", "CLUSTER", "NODES"),
    _allow(acl.MONITORING, "run", "SLOWLOG", "GET", "1"),
    _allow(acl.MONITORING, "run", "DBSIZE"),
    _deny(acl.MONITORING, "run", "GET", "{outside}"),
    _deny(acl.MONITORING, "run", "XRANGE", "{stream}", "-", "+", "COUNT", "1"),
    _deny(acl.MONITORING, "run", "XREAD", "COUNT", "1", "STREAMS", "{stream}", "0"),
    _deny(acl.MONITORING, "run", "XLEN", "{stream}"),
    _deny(acl.MONITORING, "run", "SCAN", "0"),
    _deny(acl.MONITORING, "run", "DUMP", "{outside}"),
    _deny(acl.MONITORING, "run", "RANDOMKEY"),
    # publisher: append to its streams, read nothing, touch nothing else
    _allow(acl.PUBLISHER, "dryrun", "XADD", "{stream}", "*", "sender", "probe"),
    _allow(acl.PUBLISHER, "dryrun", "XADD", "{stream}", "MAXLEN", "~", "1000", "*", "a", "b"),
    _allow(acl.PUBLISHER, "run", "CLUSTER", "SLOTS"),
    _deny(acl.PUBLISHER, "run", "XRANGE", "{stream}", "-", "+", "COUNT", "1"),
    _deny(acl.PUBLISHER, "run", "XREAD", "COUNT", "1", "STREAMS", "{stream}", "0"),
    _deny(acl.PUBLISHER, "run", "XLEN", "{stream}"),
    _deny(acl.PUBLISHER, "run", "GET", "{outside}"),
    _deny(acl.PUBLISHER, "dryrun", "XADD", "{outside}", "*", "a", "b"),
    _deny(acl.PUBLISHER, "dryrun", "SET", "{outside}", "x"),
    _deny(acl.PUBLISHER, "dryrun", "DEL", "{stream}"),
    _allow(acl.PUBLISHER, "dryrun", "XTRIM", "{stream}", "MINID", "~", "0-1"),
    _allow(acl.PUBLISHER, "dryrun", "XADD", "smoke:sse:probe", "*", "a", "b"),
    _deny(acl.PUBLISHER, "dryrun", "XADD", "smoke:other", "*", "a", "b"),
    _deny(acl.PUBLISHER, "dryrun", "XDEL", "{stream}", "0-1"),
    # publisher: the SSE proxy's exactly-once POST (one function: check the record, XADD)
    _allow(acl.PUBLISHER, "dryrun", "FCALL", PUBLISH_ONCE, "2", "{stream}", "{record}", "60"),
    _allow(acl.PUBLISHER, "run", "GET", "{record}"),
    _allow(acl.PUBLISHER, "dryrun", "SET", "{record}", "x", "EX", "60"),
    _deny(acl.PUBLISHER, "dryrun", "SET", "{stream}", "x"),
    _deny(acl.PUBLISHER, "dryrun", "GET", "{stream}"),
    _deny(acl.PUBLISHER, "dryrun", "DEL", "{record}"),
    _deny(acl.PUBLISHER, "dryrun", "XADD", "{record}", "*", "a", "b"),
    _deny(acl.PUBLISHER, "dryrun", "SET", OUTSIDE_RECORD, "x"),
    _deny(acl.PUBLISHER, "dryrun", "SET", "{outside}", "x", "EX", "60"),
    _deny(acl.PUBLISHER, "dryrun", "FCALL", PUBLISH_ONCE, "2", "{stream}", "{outside}"),
    _deny(acl.PUBLISHER, "dryrun", "FCALL", PUBLISH_ONCE, "2", "{outside}", OUTSIDE_RECORD),
    _deny(acl.PUBLISHER, "dryrun", "FCALL_RO", PUBLISH_ONCE, "0"),
    _deny(acl.PUBLISHER, "dryrun", "EVAL", "return 1", "2", "{stream}", "{record}"),
    _deny(acl.PUBLISHER, "dryrun", "EVALSHA", NO_SCRIPT, "2", "{stream}", "{record}"),
    _deny(acl.PUBLISHER, "dryrun", "FUNCTION", "LOAD", functions.CODE),
    _deny(acl.PUBLISHER, "dryrun", "FUNCTION", "LIST"),
    _deny(acl.PUBLISHER, "dryrun", "SCRIPT", "KILL"),
    # reader: read its streams, write nothing
    _allow(acl.READER, "run", "XRANGE", "{stream}", "-", "+", "COUNT", "1"),
    _allow(acl.READER, "run", "XREVRANGE", "{stream}", "+", "-", "COUNT", "1"),
    _allow(acl.READER, "run", "XREAD", "COUNT", "1", "STREAMS", "{stream}", "0"),
    _allow(acl.READER, "run", "XLEN", "{stream}"),
    _allow(acl.READER, "run", "XINFO", "STREAM", "{stream}"),
    _allow(acl.READER, "run", "CLUSTER", "SLOTS"),
    _deny(acl.READER, "dryrun", "XADD", "{stream}", "*", "a", "b"),
    _deny(acl.READER, "dryrun", "XDEL", "{stream}", "0-1"),
    _deny(acl.READER, "dryrun", "XTRIM", "{stream}", "MAXLEN", "0"),
    _deny(acl.READER, "dryrun", "XGROUP", "CREATE", "{stream}", "g", "$"),
    _deny(acl.READER, "dryrun", "DEL", "{stream}"),
    _deny(acl.READER, "run", "GET", "{outside}"),
    _deny(acl.READER, "run", "XRANGE", "{outside}", "-", "+", "COUNT", "1"),
    _allow(acl.READER, "run", "XRANGE", "smoke:sse:probe", "-", "+", "COUNT", "1"),
    _deny(acl.READER, "run", "GET", "smoke:sse:probe"),
    _deny(acl.READER, "run", "GET", "{record}"),
    _deny(acl.READER, "dryrun", "EVAL", "return 1", "1", "{stream}"),
    _deny(acl.READER, "dryrun", "FCALL", PUBLISH_ONCE, "0"),
    # smoke: its own keys and what the checks need
    _allow(acl.SMOKE, "run", "SET", "{smoke}", "probe"),
    _allow(acl.SMOKE, "run", "GET", "{smoke}"),
    _allow(acl.SMOKE, "run", "DEL", "{smoke}"),
    _allow(acl.SMOKE, "dryrun", "CLUSTER", "FAILOVER"),
    _deny(acl.SMOKE, "run", "GET", "{outside}"),
    _deny(acl.SMOKE, "run", "XRANGE", "{stream}", "-", "+", "COUNT", "1"),
    _deny(acl.SMOKE, "dryrun", "XADD", "{stream}", "*", "a", "b"),
    _deny(acl.SMOKE, "dryrun", "CLUSTER", "RESET"),
    _deny(acl.SMOKE, "run", "GET", "{record}"),
    _deny(acl.SMOKE, "dryrun", "FCALL", PUBLISH_ONCE, "0"),
    _deny(acl.SMOKE, "dryrun", "FUNCTION", "LOAD", functions.CODE),
    _deny(acl.SMOKE, "dryrun", "CLUSTER", "FORGET", "0" * 40),
)

OUTSIDE_KEY = "acl-probe:outside"
SMOKE_KEY = "smoke:acl:probe"


def concrete_stream(patterns: tuple[str, ...]) -> str:
    """A stream name the patterns cover, preferring a fixed name."""
    for pattern in patterns:
        if "*" not in pattern and "?" not in pattern:
            return pattern
    return patterns[0].replace("*", "smoke-probe").replace("?", "x")
