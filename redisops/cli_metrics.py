"""`redisops metrics`: the platform's own metrics (certificates, backups, drills)."""

from __future__ import annotations

import signal
import threading
from pathlib import Path
from typing import Annotated

import typer
from prometheus_client import CollectorRegistry, generate_latest, start_http_server

from redisops.backup.storage import open_storage
from redisops.cli_common import DEFAULT_STATE, JsonOut, StateDir, emit, logger, out
from redisops.errors import ConfigError
from redisops.opsmetrics import CertSource, OpsCollector, parse_cert_option

metrics_app = typer.Typer(
    help="The platform's own metrics: certificate expiry, backup and drill outcomes."
)

CertsOpt = Annotated[
    list[str] | None,
    typer.Option("--cert", help="NAME=PATH of a PEM certificate to watch (repeat)."),
]
BackupsOpt = Annotated[
    str | None,
    typer.Option("--backups", help="Backup location (gs://bucket/prefix or file:///dir)."),
]
TargetOpt = Annotated[
    str | None,
    typer.Option("--target", help="'local': the twin's certificates and backup location."),
]


def _collector(
    target: str | None, certs: list[str] | None, backups: str | None, state_dir: Path
) -> OpsCollector:
    sources = [parse_cert_option(text) for text in certs or []]
    if target == "local":
        from redisops.local.twin import Twin

        twin = Twin(state_dir)
        twin.settings()  # a clear error when there is no twin
        tls = twin.layout.tls
        sources += [CertSource("ca", tls.ca_cert), CertSource("node", tls.node_cert)]
        backups = backups or f"file://{twin.layout.root / 'backups'}"
    elif target is not None:
        raise ConfigError(f"--target {target!r}: only 'local'; or give --cert and --backups")
    if not sources and backups is None:
        raise ConfigError("nothing to watch: give --cert NAME=PATH and/or --backups LOCATION")
    return OpsCollector(sources, open_storage(backups) if backups else None)


@metrics_app.command("serve")
def metrics_serve(
    listen: Annotated[
        str, typer.Option("--listen", help="host:port to serve /metrics on (0.0.0.0 in a pod).")
    ] = "127.0.0.1:9122",
    target: TargetOpt = None,
    cert: CertsOpt = None,
    backups: BackupsOpt = None,
    state_dir: StateDir = DEFAULT_STATE,
) -> None:
    """Serve the metrics at http://LISTEN/metrics until SIGTERM; sources are read at
    every scrape."""
    host, sep, port = listen.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ConfigError(f"--listen {listen!r}: give host:port, e.g. 127.0.0.1:9122")
    registry = CollectorRegistry(auto_describe=False)
    registry.register(_collector(target, cert, backups, state_dir))
    server, thread = start_http_server(int(port), addr=host, registry=registry)
    logger.info("serving platform metrics on http://%s/metrics", listen)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    try:
        stop.wait()
    except KeyboardInterrupt:
        pass
    finally:
        server.shutdown()
        thread.join(5)


@metrics_app.command("show")
def metrics_show(
    target: TargetOpt = None,
    cert: CertsOpt = None,
    backups: BackupsOpt = None,
    state_dir: StateDir = DEFAULT_STATE,
    json_out: JsonOut = False,
) -> None:
    """Read the sources once and print the metrics (Prometheus text, or --json)."""
    collector = _collector(target, cert, backups, state_dir)
    if json_out:
        emit(
            {
                family.name: [
                    {"labels": sample.labels, "value": sample.value} for sample in family.samples
                ]
                for family in collector.collect()
            }
        )
        return
    registry = CollectorRegistry(auto_describe=False)
    registry.register(collector)
    out.file.write(generate_latest(registry).decode())
