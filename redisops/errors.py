"""The error families a user of `redisops` can meet.

Each message names what was wrong and how to fix it; the CLI prints it as one line.
"""


class RedisOpsError(Exception):
    """Base class: an operation could not be carried out."""

    exit_code = 1


class ConfigError(RedisOpsError):
    """Bad usage or configuration: an option, a file or the machine is not as required."""

    exit_code = 2


class OperationError(RedisOpsError):
    """A check or an operation against Redis failed."""

    exit_code = 1


class Unavailable(RedisOpsError):
    """The operation could not be run at all: what it needs (an API server, a tool, the
    rights to use them) is missing, unreachable or refused, or it ran out of time."""

    exit_code = 2
