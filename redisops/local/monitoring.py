"""The twin's monitoring stack: Debian's Prometheus, Alertmanager and one
`prometheus-redis-exporter` per node, plus `redisops metrics serve`.

The exporters log in over TLS as the `monitoring` role (its password in the
environment, never on the command line); Prometheus scrapes them, the proxy's /metrics
and the platform metrics under the job names the GKE plan gives them, and evaluates the
rule file rendered from `redisops.alerts` on the twin's clock (`TWIN_SCALE`). Alertmanager
routes every alert to the webhook given as `--alert-webhook` (none: it keeps them).

Ports, from `monitoring_port` (P): Prometheus P, Alertmanager P+1, platform metrics P+2,
exporter of node i P+10+i. Everything listens on 127.0.0.1.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import yaml

from redisops import acl
from redisops.alerts import AlertParams, rule_groups
from redisops.errors import ConfigError, OperationError
from redisops.local import process
from redisops.local.settings import HOST, MONITORING_BLOCK, TwinLayout, TwinSettings

TWIN_SCALE = 1 / 60  # a production minute is a twin second: every `for` and window
SCRAPE_S = 1  # the twin's scrape and evaluation interval (production: 30 s)
EXPORTER_OFFSET = MONITORING_BLOCK
BINARIES = {
    "prometheus": "prometheus",
    "alertmanager": "prometheus-alertmanager",
    "exporter": "prometheus-redis-exporter",
}
APT_PACKAGES = "prometheus prometheus-alertmanager prometheus-redis-exporter"


def binary(name: str) -> str:
    path = shutil.which(BINARIES[name])
    if path is None:
        raise ConfigError(
            f"{BINARIES[name]} not found: install Debian's monitoring packages "
            f"(`sudo apt-get install -y {APT_PACKAGES}`, which `make up` does), or start "
            "the twin with --no-monitoring"
        )
    return path


def twin_alert_params(settings: TwinSettings) -> AlertParams:
    """The production rules on the twin's clock and with the twin's own shape."""
    return AlertParams(
        expected_nodes=settings.node_count,
        replicas=settings.replicas,
        proxy=settings.sse_proxy,
        backup_max_age_s=settings.backup_max_age_s,
        drill_max_age_s=settings.drill_max_age_s,
        scale=TWIN_SCALE,
    )


class TwinMonitoring:
    """Files and processes of the twin's monitoring stack."""

    def __init__(self, layout: TwinLayout) -> None:
        self.layout = layout
        self.root = layout.root / "monitoring"

    # ---- where things are ------------------------------------------------------------

    @staticmethod
    def ports(settings: TwinSettings) -> dict[str, int]:
        base = settings.monitoring_port
        ports = {"prometheus": base, "alertmanager": base + 1, "ops": base + 2}
        for i, port in enumerate(settings.ports):
            ports[f"exporter-{port}"] = base + EXPORTER_OFFSET + i
        return ports

    @staticmethod
    def urls(settings: TwinSettings) -> dict[str, str]:
        ports = TwinMonitoring.ports(settings)
        return {
            "prometheus": f"http://{HOST}:{ports['prometheus']}",
            "alertmanager": f"http://{HOST}:{ports['alertmanager']}",
            "ops_metrics": f"http://{HOST}:{ports['ops']}/metrics",
        }

    def pidfile(self, name: str) -> Path:
        return self.root / f"{name}.pid"

    def logfile(self, name: str) -> Path:
        return self.root / f"{name}.log"

    @property
    def rule_file(self) -> Path:
        return self.root / "rules.yml"

    # ---- configuration ---------------------------------------------------------------

    def prometheus_config(self, settings: TwinSettings) -> dict[str, Any]:
        ports = self.ports(settings)
        params = twin_alert_params(settings)
        exporters = [
            {
                "targets": [f"{HOST}:{ports[f'exporter-{port}']}"],
                "labels": {"node": f"{settings.host_of(port)}:{port}"},
            }
            for port in settings.ports
        ]
        jobs: list[dict[str, Any]] = [
            {"job_name": params.redis_job, "static_configs": exporters},
            {
                "job_name": params.ops_job,
                "static_configs": [{"targets": [f"{HOST}:{ports['ops']}"]}],
            },
        ]
        if settings.sse_proxy:
            jobs.append(
                {
                    "job_name": params.proxy_job,
                    "static_configs": [
                        {"targets": [f"{settings.proxy_host}:{settings.proxy_port}"]}
                    ],
                }
            )
        return {
            "global": {
                "scrape_interval": f"{SCRAPE_S}s",
                "scrape_timeout": f"{SCRAPE_S}s",
                "evaluation_interval": f"{SCRAPE_S}s",
            },
            "rule_files": [str(self.rule_file)],
            "alerting": {
                "alertmanagers": [
                    {"static_configs": [{"targets": [f"{HOST}:{ports['alertmanager']}"]}]}
                ]
            },
            "scrape_configs": jobs,
        }

    @staticmethod
    def alertmanager_config(settings: TwinSettings) -> dict[str, Any]:
        receiver: dict[str, Any] = {"name": "twin"}
        if settings.alert_webhook:
            receiver["webhook_configs"] = [
                {"url": settings.alert_webhook, "send_resolved": True, "max_alerts": 0}
            ]
        return {
            "route": {
                "receiver": "twin",
                "group_by": ["alertname", "instance"],
                "group_wait": "1s",
                "group_interval": "1s",
                "repeat_interval": "1h",
            },
            "receivers": [receiver],
        }

    def write_config(self, settings: TwinSettings) -> bool:
        """Render every file; True when one changed."""
        self.root.mkdir(parents=True, exist_ok=True, mode=0o700)
        files = {
            self.rule_file: rule_groups(twin_alert_params(settings), interval_s=SCRAPE_S),
            self.root / "prometheus.yml": self.prometheus_config(settings),
            self.root / "alertmanager.yml": self.alertmanager_config(settings),
        }
        changed = False
        for path, data in files.items():
            text = yaml.safe_dump(data, sort_keys=False)
            if not path.exists() or path.read_text() != text:
                path.write_text(text)
                changed = True
        return changed

    # ---- processes -------------------------------------------------------------------

    def _argv(self, settings: TwinSettings) -> dict[str, tuple[list[str], dict[str, str]]]:
        ports = self.ports(settings)
        tls = self.layout.tls
        password = self.layout.password_file(acl.MONITORING).read_text().strip()
        result: dict[str, tuple[list[str], dict[str, str]]] = {
            "prometheus": (
                [
                    binary("prometheus"),
                    f"--config.file={self.root / 'prometheus.yml'}",
                    f"--storage.tsdb.path={self.root / 'prometheus-data'}",
                    "--storage.tsdb.retention.time=1d",
                    f"--web.listen-address={HOST}:{ports['prometheus']}",
                    "--web.enable-lifecycle",
                    # Firing alerts are re-sent every minute in production: a second on
                    # the twin's clock (a send lost while a reload rediscovers
                    # Alertmanager is then repeated at once, as in production a minute on).
                    f"--rules.alert.resend-delay={SCRAPE_S}s",
                ],
                {},
            ),
            "alertmanager": (
                [
                    binary("alertmanager"),
                    f"--config.file={self.root / 'alertmanager.yml'}",
                    f"--storage.path={self.root / 'alertmanager-data'}",
                    f"--web.listen-address={HOST}:{ports['alertmanager']}",
                    "--cluster.listen-address=",
                ],
                {},
            ),
            "ops": (
                [
                    sys.executable,
                    "-m",
                    "redisops",
                    "metrics",
                    "serve",
                    "--target",
                    "local",
                    "--state-dir",
                    str(self.layout.root),
                    "--listen",
                    f"{HOST}:{ports['ops']}",
                ],
                {},
            ),
        }
        for port in settings.ports:
            result[f"exporter-{port}"] = (
                [
                    binary("exporter"),
                    f"-redis.addr=rediss://{settings.host_of(port)}:{port}",
                    f"-redis.user={acl.MONITORING}",
                    f"-tls-ca-cert-file={tls.ca_cert}",
                    f"-tls-client-cert-file={tls.client_cert(acl.MONITORING)}",
                    f"-tls-client-key-file={tls.client_key(acl.MONITORING)}",
                    # The monitoring role has neither CONFIG nor CLIENT SETNAME.
                    "-config-command=-",
                    "-set-client-name=false",
                    f"-web.listen-address={HOST}:{ports[f'exporter-{port}']}",
                ],
                {"REDIS_PASSWORD": password},
            )
        return result

    def running_pid(self, name: str) -> int | None:
        """The PID of the stack's process `name`, or None (a stale or reused PID is not
        it: every process of the stack names this twin's directory on its command line)."""
        pid = process.read_pid(self.pidfile(name))
        if pid is not None and str(self.layout.root) in process.cmdline(pid):
            return pid
        return None

    def up(self, settings: TwinSettings) -> list[str]:
        """Start what is not running (running ones re-read changed files, and the reload
        returns once Prometheus can deliver alerts); return what was started. Waits until
        both answer."""
        changed = self.write_config(settings)
        argv = self._argv(settings)
        if changed:
            self.reload(settings)
        started = []
        for name, (args, extra_env) in argv.items():
            if self.running_pid(name) is not None:
                continue
            port = self.ports(settings)[name]
            if process.port_in_use(HOST, port, wait=2.0):
                raise ConfigError(
                    f"port {port} on {HOST} ({name}) is in use by another process; stop it or "
                    "choose another --monitoring-port"
                )
            env = {**os.environ, **extra_env}
            pid = process.start_daemon(
                args, self.logfile(name), self.pidfile(name), env=env, cwd=self.root
            )
            started.append(f"{name} (pid {pid})")
        self._wait_ready(settings)
        return started

    def _wait_ready(self, settings: TwinSettings, timeout: float = 20.0) -> None:
        urls = self.urls(settings)
        checks = {
            "prometheus": f"{urls['prometheus']}/-/ready",
            "alertmanager": f"{urls['alertmanager']}/-/ready",
        }
        deadline = time.monotonic() + timeout
        for name, url in checks.items():
            while not _answers(url):
                pid = self.running_pid(name)
                if pid is None or time.monotonic() > deadline:
                    tail = self.logfile(name).read_text(errors="replace").splitlines()[-3:]
                    raise OperationError(
                        f"{name} did not become ready at {url}: {' | '.join(tail)}; see "
                        f"{self.logfile(name)}"
                    )
                time.sleep(0.05)

    def _stop(self, name: str) -> int | None:
        pid = self.running_pid(name)
        if pid is not None:
            process.terminate(pid, 10.0)
        self.pidfile(name).unlink(missing_ok=True)
        return pid

    def down(self) -> list[str]:
        """Stop every process of the stack (by PID); return what was stopped."""
        stopped: list[str] = []
        if not self.root.is_dir():
            return stopped
        for pidfile in sorted(self.root.glob("*.pid")):
            name = pidfile.stem
            pid = self._stop(name)
            if pid is not None:
                stopped.append(f"{name} (pid {pid})")
        return stopped

    def reload(self, settings: TwinSettings, timeout: float = 15.0) -> None:
        """Make Prometheus and Alertmanager re-read their files, and return once Prometheus
        can deliver alerts again: a reload rebuilds its Alertmanager targets, and until
        discovery hands them over (up to 5 s) a firing alert goes nowhere."""
        urls = self.urls(settings)
        running = {name: self.running_pid(name) for name in ("prometheus", "alertmanager")}
        for name, pid in running.items():
            if pid is not None:
                _post(f"{urls[name]}/-/reload")  # synchronous: returns once applied
        if running["prometheus"] is None or running["alertmanager"] is None:
            return
        deadline = time.monotonic() + timeout
        while not _active_alertmanagers(urls["prometheus"]):
            if time.monotonic() > deadline:
                raise OperationError(
                    f"Prometheus found no Alertmanager {timeout:.0f} s after a reload; see "
                    f"{self.logfile('prometheus')}"
                )
            time.sleep(0.1)

    def status(self, settings: TwinSettings) -> dict[str, Any]:
        urls = self.urls(settings)
        names = ["prometheus", "alertmanager", "ops", *(f"exporter-{p}" for p in settings.ports)]
        return {
            "enabled": settings.monitoring,
            **urls,
            "scale": TWIN_SCALE,
            "rule_file": str(self.rule_file),
            "processes": {name: self.running_pid(name) for name in names},
        }


def _post(url: str) -> None:
    request = urllib.request.Request(url, method="POST")  # noqa: S310 (loopback)
    try:
        with urllib.request.urlopen(request, timeout=30) as response:  # noqa: S310 (loopback)
            response.read()
    except urllib.error.HTTPError as exc:  # the process answered: the files are wrong
        raise ConfigError(f"{url} refused the new configuration: {exc.read()[:300]!r}") from exc


def _active_alertmanagers(prometheus: str) -> list[str]:
    try:
        with urllib.request.urlopen(f"{prometheus}/api/v1/alertmanagers", timeout=2) as r:  # noqa: S310 (loopback)
            body = json.load(r)
    except (urllib.error.URLError, OSError, ValueError):
        return []
    return [a["url"] for a in body["data"]["activeAlertmanagers"]]


def _answers(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=1) as response:  # noqa: S310 (loopback)
            return bool(response.status == 200)
    except (urllib.error.URLError, OSError):
        return False
