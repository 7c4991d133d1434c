"""Connections to the cluster's nodes: TLS material, role credentials, endpoints."""

from __future__ import annotations

import socket
import ssl
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import redis
from pydantic import BaseModel, ConfigDict, Field, SecretStr
from redis.backoff import NoBackoff
from redis.cluster import ClusterNode as RedisPyClusterNode
from redis.cluster import RedisCluster
from redis.retry import Retry

from redisops.errors import ConfigError, OperationError


class Endpoint(BaseModel):
    """host:port of one node's TLS client port."""

    model_config = ConfigDict(frozen=True)

    host: str
    port: int = Field(ge=1, le=65535)

    def __str__(self) -> str:
        return f"{self.host}:{self.port}"

    @classmethod
    def parse(cls, text: str) -> Endpoint:
        host, sep, port = text.rpartition(":")
        if not sep or not host or not port.isdigit():
            raise ConfigError(f"endpoint {text!r}: expected host:port, e.g. 127.0.0.1:7000")
        return cls(host=host, port=int(port))


class Credentials(BaseModel):
    """A Redis username and its password (kept out of reprs and logs)."""

    model_config = ConfigDict(frozen=True)

    username: str
    password: SecretStr

    @classmethod
    def from_file(cls, username: str, path: str | Path) -> Credentials:
        """Read the password from a file (a mounted Secret, or the twin's 0600 file)."""
        try:
            password = Path(path).read_text().strip()
        except OSError as exc:
            raise ConfigError(
                f"credentials for {username}: cannot read password file {path} "
                f"({exc.strerror}); check the path and its permissions"
            ) from exc
        if not password:
            raise ConfigError(f"credentials for {username}: password file {path} is empty")
        return cls(username=username, password=SecretStr(password))


class TlsClient(BaseModel):
    """What a client needs to reach a TLS-only node: the CA, and a client certificate when
    the nodes require mutual TLS."""

    model_config = ConfigDict(frozen=True)

    ca_file: str
    cert_file: str | None = None
    key_file: str | None = None
    check_hostname: bool = True

    def redis_kwargs(self) -> dict[str, Any]:
        return {
            "ssl": True,
            "ssl_ca_certs": self.ca_file,
            "ssl_certfile": self.cert_file,
            "ssl_keyfile": self.key_file,
            "ssl_cert_reqs": "required",
            "ssl_check_hostname": self.check_hostname,
        }

    def redis_cli_args(self) -> list[str]:
        args = ["--tls", "--cacert", self.ca_file]
        if self.cert_file and self.key_file:
            args += ["--cert", self.cert_file, "--key", self.key_file]
        return args


def connect(
    endpoint: Endpoint,
    tls: TlsClient,
    credentials: Credentials,
    *,
    timeout: float = 3.0,
    decode_responses: bool = True,
) -> redis.Redis:
    """A single-node client (no redirects followed), authenticated as `credentials`."""
    return redis.Redis(
        host=endpoint.host,
        port=endpoint.port,
        username=credentials.username,
        password=credentials.password.get_secret_value(),
        socket_timeout=timeout,
        socket_connect_timeout=timeout,
        decode_responses=decode_responses,
        # No hidden retries with backoff (redis-py's default sleeps seconds on a dead
        # node): callers decide when to try again, and measurements stay honest.
        retry=Retry(NoBackoff(), 0),
        # No CLIENT SETINFO: roles do not grant it, and denials would pollute ACL LOG.
        driver_info=None,
        **tls.redis_kwargs(),
    )


def connect_cluster(
    endpoints: Sequence[Endpoint],
    tls: TlsClient,
    credentials: Credentials,
    *,
    timeout: float = 3.0,
    decode_responses: bool = True,
) -> RedisCluster:
    """A cluster-aware client; the role needs `+cluster|slots +command`."""
    return RedisCluster(
        startup_nodes=[RedisPyClusterNode(e.host, e.port) for e in endpoints],
        username=credentials.username,
        password=credentials.password.get_secret_value(),
        socket_timeout=timeout,
        socket_connect_timeout=timeout,
        decode_responses=decode_responses,
        driver_info=None,
        **tls.redis_kwargs(),
    )


def served_certificate(endpoint: Endpoint, tls: TlsClient, *, timeout: float = 3.0) -> bytes:
    """The certificate `endpoint` presents now (DER): proves a reload took effect."""
    context = ssl.create_default_context(cafile=tls.ca_file)
    context.check_hostname = False  # we compare the certificate itself, byte for byte
    if tls.cert_file and tls.key_file:
        context.load_cert_chain(tls.cert_file, tls.key_file)
    with (
        socket.create_connection((endpoint.host, endpoint.port), timeout=timeout) as raw,
        context.wrap_socket(raw, server_hostname=endpoint.host) as conn,
    ):
        der = conn.getpeercert(binary_form=True)
    if der is None:
        raise OperationError(f"{endpoint} presented no certificate")
    return der
