from __future__ import annotations

import pytest
from pydantic import ValidationError

from redisops.conf import NodeSpec, TlsFiles, render_redis_conf, render_replication_include
from redisops.errors import ConfigError


def spec(**overrides: object) -> NodeSpec:
    values: dict[str, object] = {
        "port": 7000,
        "data_dir": "/data",
        "tls": TlsFiles(
            ca_cert_file="/tls/ca.crt", cert_file="/tls/node.crt", key_file="/tls/node.key"
        ),
        "aclfile": "/acl/users.acl",
        "replication_include": "/secrets/replication.conf",
    }
    values.update(overrides)
    return NodeSpec.model_validate(values)


def directives(text: str) -> dict[str, str]:
    result = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            key, _, value = line.partition(" ")
            result[key] = value
    return result


def test_tls_only_with_mutual_tls_on_bus_and_replication() -> None:
    conf = directives(render_redis_conf(spec()))
    assert conf["port"] == "0"
    assert conf["tls-port"] == "7000"
    assert conf["tls-cluster"] == "yes"
    assert conf["tls-replication"] == "yes"
    assert conf["tls-auth-clients"] == "yes"
    assert conf["tls-protocols"] == '"TLSv1.2 TLSv1.3"'
    assert conf["tls-cert-file"] == "/tls/node.crt"


def test_cluster_persistence_memory_and_acl_settings() -> None:
    conf = directives(render_redis_conf(spec(cluster_node_timeout_ms=2500)))
    assert conf["cluster-enabled"] == "yes"
    assert conf["cluster-node-timeout"] == "2500"
    assert conf["cluster-config-file"] == "/data/nodes.conf"
    assert conf["appendonly"] == "yes"
    assert conf["appendfsync"] == "everysec"
    assert conf["save"] == "3600 1 300 100 60 10000"
    assert conf["repl-diskless-sync-delay"] == "0"
    assert conf["maxmemory-policy"] == "noeviction"
    assert conf["aclfile"] == "/acl/users.acl"
    assert conf["enable-debug-command"] == "no"


def test_masterauth_is_kept_out_of_the_main_file() -> None:
    text = render_redis_conf(spec())
    assert "masterauth" not in directives(text)
    assert "masteruser" not in directives(text)
    assert text.rstrip().endswith("include /secrets/replication.conf")


def test_replication_include_holds_user_and_password() -> None:
    text = render_replication_include("s3cret-password-abcdefgh")
    assert text == 'masteruser replication\nmasterauth "s3cret-password-abcdefgh"\n'


@pytest.mark.parametrize("password", ["", "has space", 'quote"', "line\nbreak"])
def test_replication_include_refuses_unsafe_passwords(password: str) -> None:
    with pytest.raises(ConfigError, match="replication password"):
        render_replication_include(password)


def test_announced_hostname_makes_redirects_use_names() -> None:
    conf = directives(render_redis_conf(spec(announce_hostname="redis-0.redis.ns.svc")))
    assert conf["cluster-announce-hostname"] == "redis-0.redis.ns.svc"
    assert conf["cluster-preferred-endpoint-type"] == "hostname"
    assert "cluster-announce-hostname" not in directives(render_redis_conf(spec()))


@pytest.mark.parametrize("field", ["data_dir", "aclfile", "replication_include", "pidfile"])
def test_relative_paths_are_refused(field: str) -> None:
    with pytest.raises(ValidationError, match="absolute path"):
        spec(**{field: "relative/path"})


def test_relative_tls_paths_are_refused() -> None:
    with pytest.raises(ValidationError, match="absolute path"):
        TlsFiles(ca_cert_file="ca.crt", cert_file="/a", key_file="/b")


def test_daemon_needs_pidfile_and_logfile() -> None:
    with pytest.raises(ValidationError, match="daemonize needs"):
        spec(daemonize=True)
    conf = directives(
        render_redis_conf(spec(daemonize=True, pidfile="/run/r.pid", logfile="/log/r.log"))
    )
    assert conf["daemonize"] == "yes"
    assert conf["pidfile"] == "/run/r.pid"


@pytest.mark.parametrize(
    ("field", "value"),
    [("port", 0), ("port", 60000), ("maxmemory", "lots"), ("cluster_node_timeout_ms", 10)],
)
def test_out_of_range_values_are_refused(field: str, value: object) -> None:
    with pytest.raises(ValidationError):
        spec(**{field: value})
