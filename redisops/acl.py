"""Who may do what: the Redis users of the platform, as data, and the ACL file they render to.

This module is the single definition of every role's rights. Both targets load the file
rendered here (`aclfile`); it holds SHA-256 password hashes only, never a password.

Rules are written the way Redis 7 lists them back (`ACL LIST`), so drift between the
file and what a node has loaded can be detected token by token (`diff_acl`).
"""

from __future__ import annotations

import functools
import hashlib
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

from redis.crc import key_slot

from redisops.errors import ConfigError

DEFAULT_STREAMS: tuple[str, ...] = ("agent_updates", "agent_tasks", "standup:*")

# Role names double as Redis usernames.
ADMIN = "admin"
OPERATOR = "operator"
REPLICATION = "replication"
BACKUP = "backup"
MONITORING = "monitoring"
PUBLISHER = "publisher"
READER = "reader"
SMOKE = "smoke"

ROLES: tuple[str, ...] = (
    ADMIN,
    OPERATOR,
    REPLICATION,
    BACKUP,
    MONITORING,
    PUBLISHER,
    READER,
    SMOKE,
)

# What every client that speaks the cluster protocol (redis-py RedisCluster, redis-cli -c)
# needs: without cluster|slots redis-py reports "Cluster mode is not enabled on this node".
CLUSTER_CLIENT: tuple[str, ...] = ("+cluster|slots", "+command")

# Key prefix reserved for the smoke suite; stream patterns may not reach into it.
SMOKE_PREFIX = "smoke:"
# Streams the smoke suite round-trips through the SSE proxy. The publisher and reader
# roles (and so the proxy) always serve them, besides the configured streams, so that the
# post-rollout checks never write into a real stream.
SMOKE_STREAMS = "smoke:sse:*"
# Key prefix of the SSE proxy's idempotency records (exactly-once POST); stream patterns
# may not reach into it either.
IDEMPOTENCY_PREFIX = "idempotency:"
RESERVED_PREFIXES = {SMOKE_PREFIX: "the smoke suite's", IDEMPOTENCY_PREFIX: "the SSE proxy's"}
# What an Idempotency-Key may be: no ':' (so a record names one stream and key) and
# nothing a client could use to reach outside its record.
IDEMPOTENCY_KEY = re.compile(r"^[A-Za-z0-9_.+/=\-]{1,128}$")

_STREAM_PATTERN = re.compile(r"^[A-Za-z0-9_.:{}\-*?]+$")
_SHA256_HEX = re.compile(r"^[0-9a-f]{64}$")
MIN_PASSWORD_LENGTH = 16
MAX_PASSWORDS_PER_USER = 2


@dataclass(frozen=True)
class Selector:
    """A Redis 7 ACL selector: further keys and commands, granted only together.

    A command passes when the user's root rules or one selector allow the command and all
    of its keys, so a selector can grant a command on some keys only (`SET` on
    idempotency records, never on a stream).
    """

    keys: tuple[str, ...]
    commands: tuple[str, ...]

    def token(self) -> str:
        """The selector as Redis 7 lists it (it shows `%RW~` as `~`)."""
        return f"({' '.join((*self.keys, 'resetchannels', *self.commands))})"


@dataclass(frozen=True)
class RoleSpec:
    """One Redis user: what it is for, which keys and channels it may touch, which commands."""

    name: str
    purpose: str
    keys: tuple[str, ...]
    channels: tuple[str, ...]
    commands: tuple[str, ...]
    selectors: tuple[Selector, ...] = field(default=())

    def rule_tokens(self) -> tuple[str, ...]:
        """The selector part of the ACL line, in the order Redis 7 lists it."""
        channels = self.channels if self.channels else ("resetchannels",)
        return (*self.keys, *channels, *self.commands, *(s.token() for s in self.selectors))


def _hash_tag(key: str) -> str | None:
    """What Redis Cluster hashes of `key` when it has a hash tag: the text between the
    first `{` and the first `}` after it, if not empty."""
    start = key.find("{")
    end = key.find("}", start + 1) if start >= 0 else -1
    return key[start + 1 : end] if end > start + 1 else None


@functools.cache
def _tag_for_slot(slot: int) -> str:
    """The first counter, in base 36, that hashes to `slot` (found by trying: ~10 ms; at
    most 4 characters for any slot)."""
    n = 0
    while True:
        tag = _base36(n)
        if key_slot(tag.encode()) == slot:
            return tag
        n += 1


def _base36(n: int) -> str:
    digits = "0123456789abcdefghijklmnopqrstuvwxyz"
    text = digits[n % 36]
    while n >= 36:
        n //= 36
        text = digits[n % 36] + text
    return text


def slot_tag(stream: str) -> str:
    """A hash tag that puts a key into `stream`'s cluster slot.

    The stream's own tag if it has one, else its whole name; a name holding a `}` outside
    a tag cannot be quoted inside one, so for it a short string of the same slot is used.
    """
    tag = _hash_tag(stream)
    if tag is not None:
        return tag
    if "}" not in stream:
        return stream
    return _tag_for_slot(key_slot(stream.encode()))


def idempotency_key(stream: str, key: str) -> str:
    """The name of the record of Idempotency-Key `key` on `stream`:
    `idempotency:{<slot tag>}:<stream>:<key>`.

    The hash tag puts it in the stream's slot, so one function can check it and XADD
    atomically. Keys hold no `:`, so the record names exactly one (stream, key) pair.
    """
    if not IDEMPOTENCY_KEY.match(key):
        raise ConfigError(
            f"Idempotency-Key {key[:40]!r}: use 1-128 letters, digits or - _ . + / = "
            "(e.g. a UUID), one per event"
        )
    return f"{IDEMPOTENCY_PREFIX}{{{slot_tag(stream)}}}:{stream}:{key}"


def idempotency_pattern(stream_pattern: str) -> str:
    """The key pattern covering the idempotency records of the streams `stream_pattern`
    matches (and, like it, nothing outside the reserved prefix)."""
    return f"{IDEMPOTENCY_PREFIX}{{*}}:{stream_pattern}:*"


def validate_stream_patterns(patterns: Sequence[str]) -> tuple[str, ...]:
    """Check the configured stream name patterns and return them as a tuple.

    Patterns are Redis glob patterns (`standup:*`). They become key patterns of the
    publisher and reader users, so anything that would widen those users is refused.
    """
    if not patterns:
        raise ConfigError(
            "streams: the list of stream patterns is empty; "
            f"configure at least one, e.g. {', '.join(DEFAULT_STREAMS)}"
        )
    seen: list[str] = []
    for pattern in patterns:
        if not _STREAM_PATTERN.match(pattern):
            raise ConfigError(
                f"streams: {pattern!r} is not a valid stream pattern; use letters, digits and "
                "_ . : - { } with * or ? as wildcards (e.g. 'standup:*')"
            )
        if pattern.strip("*?") == "" or pattern.startswith(("*", "?")):
            raise ConfigError(
                f"streams: {pattern!r} would match every key; give a fixed prefix "
                "such as 'events:*'"
            )
        fixed = re.split(r"[*?]", pattern, maxsplit=1)[0]
        has_wildcard = fixed != pattern
        for prefix, owner in RESERVED_PREFIXES.items():
            if pattern.startswith(prefix) or (has_wildcard and prefix.startswith(fixed)):
                raise ConfigError(
                    f"streams: {pattern!r} overlaps {owner} reserved prefix "
                    f"{prefix!r}; choose another name"
                )
        if pattern not in seen:
            seen.append(pattern)
    return tuple(seen)


def role_specs(streams: Sequence[str] = DEFAULT_STREAMS) -> dict[str, RoleSpec]:
    """Every role of the platform with the least rights it needs, for the given streams."""
    streams = validate_stream_patterns(streams)
    served = (*streams, SMOKE_STREAMS)
    records = tuple(f"~{idempotency_pattern(p)}" for p in served)
    specs = [
        RoleSpec(
            ADMIN,
            "people and break-glass automation; also TLS reloads (CONFIG SET)",
            keys=("~*",),
            channels=("&*",),
            commands=("+@all",),
        ),
        RoleSpec(
            OPERATOR,
            "redisops reconcile: form, heal and scale the cluster, reload ACLs, load the "
            "platform's function library",
            # MIGRATE (resharding by redis-cli --cluster) needs access to every key.
            keys=("~*",),
            channels=(),
            commands=(
                "-@all",
                "+cluster",
                "+migrate",
                "+select",
                "+restore-asking",
                "+asking",
                "+readonly",
                "+info",
                "+ping",
                "+dbsize",
                "+acl|load",
                "+acl|list",
                # The platform's function library (redisops.functions), never FCALL, nor
                # FUNCTION DELETE/FLUSH/RESTORE.
                "+function|load",
                "+function|list",
                "+command",
            ),
        ),
        RoleSpec(
            REPLICATION,
            "replicas authenticating to their primary (masteruser)",
            keys=(),
            channels=(),
            # Without +replconf replication breaks silently (link up, WAIT returns 0).
            commands=("-@all", "+psync", "+replconf", "+ping"),
        ),
        RoleSpec(
            BACKUP,
            "redisops backup: RDB snapshots with redis-cli --rdb, topology and key counts",
            keys=(),
            channels=(),
            commands=(
                "-@all",
                "+sync",
                "+replconf",
                "+ping",
                "+info",
                "+dbsize",
                "+cluster|nodes",
                "+cluster|shards",
                "+cluster|info",
                *CLUSTER_CLIENT,
            ),
        ),
        RoleSpec(
            MONITORING,
            "redis_exporter and health probes: server statistics, never data",
            keys=(),
            channels=(),
            commands=(
                "-@all",
                "+ping",
                "+info",
                "+dbsize",
                "+cluster|info",
                "+cluster|nodes",
                "+cluster|shards",
                "+cluster|myid",
                "+slowlog|get",
                "+slowlog|len",
                "+latency|latest",
                "+latency|history",
                "+memory|stats",
                "+client|list",
                *CLUSTER_CLIENT,
            ),
        ),
        RoleSpec(
            PUBLISHER,
            "agents and the SSE proxy appending events to the configured streams",
            # Write-only key access: XADD is allowed, reading the stream back is not.
            keys=tuple(f"%W~{p}" for p in served),
            channels=(),
            # XADD trims by MAXLEN or MINID, not both: XTRIM applies the other. It grants
            # nothing XADD ... MAXLEN 0 could not already do.
            commands=("-@all", "+xadd", "+xtrim", "+ping", *CLUSTER_CLIENT),
            selectors=(
                # The proxy's exactly-once POST: one function (redisops.functions) checks
                # the stream's idempotency record and XADDs. FCALL declares both keys, so
                # it needs read and write on them; inside, the function can run only what
                # the rules above and below allow (no read command on a stream). FCALL,
                # never EVAL: a command without keys passes every selector's key check, so
                # EVAL here would run any Lua at all; FCALL runs only loaded functions, and
                # only the operator (reconcile) and admin may load one.
                Selector(
                    keys=(*(f"~{p}" for p in served), *records),
                    commands=("-@all", "+fcall"),
                ),
                # The function's GET and SET of the records run with the publisher's rights
                # (Redis has no rights of a function's own): on records only, since SET on
                # a stream would replace it.
                Selector(keys=records, commands=("-@all", "+get", "+set")),
            ),
        ),
        RoleSpec(
            READER,
            "the SSE proxy and consumers reading the configured streams",
            keys=tuple(f"%R~{p}" for p in (*streams, SMOKE_STREAMS)),
            channels=(),
            commands=(
                "-@all",
                "+xread",
                "+xrange",
                "+xrevrange",
                "+xinfo",
                "+xlen",
                "+ping",
                "+readonly",
                *CLUSTER_CLIENT,
            ),
        ),
        RoleSpec(
            SMOKE,
            "the post-rollout smoke suite: its own smoke:* keys, graceful failover, ACL dry runs",
            keys=(f"~{SMOKE_PREFIX}*",),
            channels=(),
            commands=(
                "-@all",
                "+get",
                "+set",
                "+del",
                "+exists",
                "+pexpire",
                "+pttl",
                "+rpush",
                "+lrange",
                "+llen",
                "+xadd",
                "+xrange",
                "+xlen",
                "+wait",
                "+ping",
                "+info",
                "+dbsize",
                "+readonly",
                "+cluster|info",
                "+cluster|nodes",
                "+cluster|shards",
                "+cluster|myid",
                "+cluster|keyslot",
                "+cluster|countkeysinslot",
                "+cluster|failover",
                "+acl|dryrun",
                "+acl|whoami",
                *CLUSTER_CLIENT,
            ),
        ),
    ]
    return {spec.name: spec for spec in specs}


def hash_password(password: str) -> str:
    """SHA-256 of a password as the hex digest Redis expects after `#` in an ACL rule."""
    if len(password) < MIN_PASSWORD_LENGTH:
        raise ConfigError(
            f"password: {len(password)} characters is too short; use at least "
            f"{MIN_PASSWORD_LENGTH} random characters"
        )
    if any(c.isspace() for c in password):
        raise ConfigError("password: contains white space; generate one without spaces")
    return hashlib.sha256(password.encode()).hexdigest()


def render_acl_file(
    password_hashes: Mapping[str, Sequence[str]],
    streams: Sequence[str] = DEFAULT_STREAMS,
) -> str:
    """Render the ACL file: `default` off, then one line per role with its password hashes.

    `password_hashes` maps every role to one hash, or two during a password rotation
    (both passwords work until the old one is dropped).
    """
    specs = role_specs(streams)
    missing = [role for role in specs if not password_hashes.get(role)]
    if missing:
        raise ConfigError(
            f"acl: no password hash for role(s) {', '.join(missing)}; "
            "give every role one hash (two while rotating)"
        )
    unknown = sorted(set(password_hashes) - set(specs))
    if unknown:
        raise ConfigError(
            f"acl: unknown role(s) {', '.join(unknown)}; known roles are {', '.join(specs)}"
        )
    lines = ["user default off resetchannels -@all"]
    for role, spec in specs.items():
        hashes = list(dict.fromkeys(password_hashes[role]))
        if len(hashes) > MAX_PASSWORDS_PER_USER:
            raise ConfigError(
                f"acl: role {role} has {len(hashes)} password hashes; at most "
                f"{MAX_PASSWORDS_PER_USER} (current and next, during rotation)"
            )
        for digest in hashes:
            if not _SHA256_HEX.match(digest):
                raise ConfigError(
                    f"acl: password hash for role {role} is not a lowercase SHA-256 hex "
                    "digest; pass hash_password(password), never the password itself"
                )
        tokens = ["user", role, "on", *(f"#{h}" for h in hashes), *spec.rule_tokens()]
        lines.append(" ".join(tokens))
    return "\n".join(lines) + "\n"


@dataclass(frozen=True)
class AclUser:
    """One `user ...` line reduced to what it grants; token order does not matter."""

    name: str
    enabled: bool
    password_hashes: frozenset[str]
    rules: frozenset[str]


def parse_acl_lines(lines: Iterable[str]) -> dict[str, AclUser]:
    """Parse ACL file lines or `ACL LIST` output into users keyed by name."""
    users: dict[str, AclUser] = {}
    for raw in lines:
        line = raw.strip()
        if not line:
            continue
        tokens = line.split()
        if len(tokens) < 2 or tokens[0] != "user":
            raise ConfigError(
                f"acl: cannot parse line {line[:40]!r}...; expected 'user <name> ...'"
            )
        name = tokens[1]
        rest = _group_selectors(tokens[2:])
        enabled = "on" in rest
        hashes = frozenset(t[1:] for t in rest if t.startswith("#"))
        rules = frozenset(t for t in rest if t not in ("on", "off") and not t.startswith("#"))
        users[name] = AclUser(name, enabled, hashes, rules)
    return users


def _group_selectors(tokens: Sequence[str]) -> list[str]:
    """Tokens with each `( ... )` selector as one token, its rules in a canonical order."""
    grouped: list[str] = []
    selector: list[str] | None = None
    for token in tokens:
        if selector is None and token.startswith("("):
            selector, token = [], token[1:]
        if selector is None:
            grouped.append(token)
            continue
        closed = token.endswith(")")
        selector.append(token.removesuffix(")"))
        if closed:
            grouped.append("(" + " ".join(sorted(t for t in selector if t)) + ")")
            selector = None
    if selector is not None:
        raise ConfigError("acl: a selector '(' is never closed with ')'")
    return grouped


def diff_acl(expected_text: str, loaded_lines: Iterable[str]) -> list[str]:
    """Differences between a rendered ACL file and what a node lists, one line each.

    Returns an empty list when the node enforces exactly the file. Messages name users
    and what differs, never hashes.
    """
    expected = parse_acl_lines(expected_text.splitlines())
    loaded = parse_acl_lines(loaded_lines)
    problems: list[str] = []
    for name in sorted(set(expected) | set(loaded)):
        want, have = expected.get(name), loaded.get(name)
        if want is None:
            problems.append(f"user {name} exists on the node but not in the ACL file")
        elif have is None:
            problems.append(f"user {name} is missing on the node")
        else:
            if want.enabled != have.enabled:
                problems.append(f"user {name} is {'on' if have.enabled else 'off'} on the node")
            if want.password_hashes != have.password_hashes:
                problems.append(f"user {name} has different passwords on the node")
            if want.rules != have.rules:
                problems.append(f"user {name} has different rules on the node")
    return problems
