"""The `redisops` command line: the local twin, reconcile, and the smoke suite.

Exit codes: 0 success, 1 a check or an operation failed, 2 bad usage or configuration.
Every command that scripts call has `--json` (stdout then holds JSON only; progress and
logs go to stderr).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated, Any

import redis
import typer
from rich.table import Table

from redisops import acl, cli_ops, kube, log
from redisops import node as node_start
from redisops.cli_backup import backup_app, drill_app, restore_cmd
from redisops.cli_common import DEFAULT_STATE as DEFAULT_STATE_DIR
from redisops.cli_common import (
    JsonOut,
    StateDir,
    client_certificate,
    err,
    given_options,
    logger,
    out,
    parse_desired_node,
    refuse_unused,
)
from redisops.cli_common import emit as _emit_common
from redisops.cli_metrics import metrics_app
from redisops.cli_ops_security import acl_app, certs_app
from redisops.cli_smoke import smoke_cmd
from redisops.client import Credentials, TlsClient
from redisops.cluster import format_ranges
from redisops.errors import ConfigError, RedisOpsError
from redisops.local import compose
from redisops.local.twin import Twin
from redisops.plan import ACTIONS, Action, Plan
from redisops.reconcile import ReconcileOptions, ReconcileReport, reconcile
from redisops.topology import DesiredCluster, DesiredNode

app = typer.Typer(
    name="redisops",
    help="Operate the redis-platform Redis Cluster: the local twin, reconcile, smoke tests.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
local_app = typer.Typer(help="The local twin: a real TLS + ACL Redis Cluster on 127.0.0.1.")
app.add_typer(local_app, name="local")
app.add_typer(backup_app, name="backup")
app.add_typer(drill_app, name="drill")
app.add_typer(metrics_app, name="metrics")
app.add_typer(acl_app, name="acl")
app.add_typer(certs_app, name="certs")
app.command("restore")(restore_cmd)
app.command("smoke")(smoke_cmd)

emit = _emit_common


def _status_table(status: dict[str, Any]) -> Table:
    table = Table(title=f"local twin ({status['state_dir']})")
    for column in ("node", "zone", "role", "shard", "slots", "state", "pid"):
        table.add_column(column)
    for node in status["nodes"]:
        state = node["cluster_state"] or ("down" if not node["running"] else "unreachable")
        style = "green" if state == "ok" else "red"
        table.add_row(
            f"{node['host']}:{node['port']}",
            node["zone"] or "-",
            node["role"],
            "-" if node["shard"] is None else str(node["shard"]),
            format_ranges([tuple(r) for r in node["slots"]]) if node["slots"] else "-",
            f"[{style}]{state}[/{style}]",
            str(node["pid"] or "-"),
        )
    proxy = status.get("sse_proxy") or {}
    if proxy.get("enabled"):
        state = "ready" if proxy.get("ready") else ("starting" if proxy.get("running") else "down")
        style = "green" if state == "ready" else "red"
        table.caption = (
            f"SSE proxy {proxy['url']} [{style}]{state}[/{style}] (pid {proxy.get('pid') or '-'}); "
            f"development token in {proxy['token_file']}"
        )
    monitoring = status.get("monitoring") or {}
    if monitoring.get("enabled"):
        down = [name for name, pid in monitoring["processes"].items() if pid is None]
        line = (
            f"Prometheus {monitoring['prometheus']}, Alertmanager {monitoring['alertmanager']}"
            f" (alert clock x{1 / monitoring['scale']:.0f})"
            + (f"; [red]not running: {', '.join(down)}[/red]" if down else "")
        )
        table.caption = f"{table.caption}\n{line}" if table.caption else line
    return table


def _plan_table(plan: Plan) -> Table:
    table = Table(title=f"plan: {len(plan.actions)} change(s)", title_justify="left")
    for column in ("#", "action", "node", "risk", "reason"):
        table.add_column(column, overflow="fold")
    colours = {"none": "green", "low": "green", "medium": "yellow", "high": "red"}
    for i, action in enumerate(plan.actions, start=1):
        risk = f"[{colours[action.risk]}]{action.risk}[/{colours[action.risk]}]"
        table.add_row(str(i), action.message, action.node or "-", risk, action.reason)
    return table


def _print_plan(plan: Plan) -> None:
    if plan.actions:
        out.print(_plan_table(plan))
    else:
        out.print("plan: no changes")


def _print_report(report: ReconcileReport) -> None:
    if report.failed is not None:
        out.print(f"  [red]failed[/red] {report.failed.message}: {report.failed.error}")
        for action in report.remaining:
            out.print(f"  not started: {action.message}")
    for finding in report.findings:
        colour = {"error": "red", "warning": "yellow", "info": "blue"}[finding.severity]
        where = f" {finding.node}" if finding.node else ""
        fix = f" — fix: {finding.fix}" if finding.fix else ""
        out.print(
            f"  [{colour}]{finding.severity}[/{colour}] {finding.code}{where}: "
            f"{finding.message}{fix}"
        )
    out.print(report.summary())


def _report_json(report: ReconcileReport) -> dict[str, Any]:
    data = report.model_dump(mode="json")
    data.update(
        changed=report.changed,
        healthy=report.healthy,
        summary=report.summary(),
        remaining=[a.model_dump(mode="json") for a in report.remaining],
    )
    return data


# ---- local ------------------------------------------------------------------------


@local_app.command("up")
def local_up(
    shards: Annotated[int | None, typer.Option(help="Number of shards (>= 3). Default 3.")] = None,
    replicas: Annotated[
        int | None, typer.Option(help="Replicas per shard (>= 0). Default 1.")
    ] = None,
    node_timeout: Annotated[
        int | None, typer.Option(help="cluster-node-timeout in ms. Default 1000.")
    ] = None,
    base_port: Annotated[
        int | None, typer.Option(help="First node's port; bus ports are +10000. Default 7000.")
    ] = None,
    stream: Annotated[
        list[str] | None,
        typer.Option(
            help="Stream name pattern the publisher/reader roles get; repeat. "
            "Default agent_updates, agent_tasks, standup:*."
        ),
    ] = None,
    sse_proxy: Annotated[
        bool | None,
        typer.Option("--sse-proxy/--no-sse-proxy", help="Run the SSE proxy. Default on."),
    ] = None,
    proxy_port: Annotated[
        int | None, typer.Option(help="The SSE proxy's port. Default 8700.")
    ] = None,
    backup_max_age: Annotated[
        int | None,
        typer.Option(help="Seconds the newest backup may be old (the smoke suite checks it)."),
    ] = None,
    drill_max_age: Annotated[
        int | None,
        typer.Option(help="Seconds between restore drills before an alert says one is overdue."),
    ] = None,
    monitoring: Annotated[
        bool | None,
        typer.Option(
            "--monitoring/--no-monitoring",
            help="Run Prometheus, Alertmanager and the exporters. Default off (make up: on).",
        ),
    ] = None,
    monitoring_port: Annotated[
        int | None,
        typer.Option(
            help="Prometheus' port; Alertmanager +1, metrics +2, exporters +10... Default 9700."
        ),
    ] = None,
    alert_webhook: Annotated[
        str | None,
        typer.Option(help="URL Alertmanager posts every alert to (firing and resolved)."),
    ] = None,
    hosts: Annotated[
        str | None,
        typer.Option(
            help="loopback: every process on 127.0.0.1 (default). netns: every node, the "
            "proxy and two client hosts in network namespaces of their own on one bridge "
            "(root; for partition drills). Fixed when the twin is created."
        ),
    ] = None,
    state_dir: StateDir = DEFAULT_STATE_DIR,
    json_out: JsonOut = False,
) -> None:
    """Start the twin (or recover / grow it) and print its status. Safe to run twice."""
    if sse_proxy is False:
        refuse_unused("--no-sse-proxy", {"--proxy-port": proxy_port})
    if monitoring is False:
        refuse_unused(
            "--no-monitoring",
            {"--monitoring-port": monitoring_port, "--alert-webhook": alert_webhook},
        )
    twin = Twin(state_dir, progress=logger.info)
    report = twin.up(
        shards=shards,
        replicas=replicas,
        node_timeout_ms=node_timeout,
        base_port=base_port,
        streams=tuple(stream) if stream else None,
        sse_proxy=sse_proxy,
        proxy_port=proxy_port,
        backup_max_age_s=backup_max_age,
        drill_max_age_s=drill_max_age,
        monitoring=monitoring,
        monitoring_port=monitoring_port,
        alert_webhook=alert_webhook,
        hosts=hosts,
    )
    status = twin.status()
    if json_out:
        emit({"reconcile": _report_json(report), "status": status})
    else:
        out.print(_status_table(status))
        _print_report(report)
    if not (report.healthy and status["healthy"]):
        raise typer.Exit(1)


@local_app.command("down")
def local_down(
    purge: Annotated[
        bool, typer.Option("--purge", help="Also delete data, certificates and credentials.")
    ] = False,
    state_dir: StateDir = DEFAULT_STATE_DIR,
    json_out: JsonOut = False,
) -> None:
    """Stop every node of the twin by PID. Data is kept unless --purge."""
    stopped = Twin(state_dir, progress=logger.info).down(purge=purge)
    if json_out:
        emit({"stopped_ports": stopped, "purged": purge})
    else:
        out.print(
            f"stopped {len(stopped)} node(s)"
            + ("; state removed" if purge else f"; data kept in {state_dir}")
        )


@local_app.command("status")
def local_status(state_dir: StateDir = DEFAULT_STATE_DIR, json_out: JsonOut = False) -> None:
    """Nodes, roles, shards and slots. Exit 1 when a node is down or not ok."""
    status = Twin(state_dir).status()
    if json_out:
        emit(status)
    else:
        out.print(_status_table(status))
    if not status["healthy"]:
        raise typer.Exit(1)


@local_app.command("compose-init")
def local_compose_init(
    directory: Annotated[
        Path, typer.Option("--dir", help="Where the compose services mount it from.")
    ] = Path("/var/lib/redis-platform"),
    shards: Annotated[int, typer.Option(help="Shards (>= 3).")] = 3,
    replicas: Annotated[int, typer.Option(help="Replicas per shard.")] = 1,
    node_timeout_ms: Annotated[int, typer.Option(help="cluster-node-timeout in ms.")] = 2000,
    json_out: JsonOut = False,
) -> None:
    """Render docker-compose.yml's TLS material, passwords, ACL file (hashes only),
    redis.conf, proxy config and smoke target for its service names; keeps what exists."""
    result = compose.render(
        directory, shards=shards, replicas=replicas, node_timeout_ms=node_timeout_ms
    )
    emit(result) if json_out else out.print(f"compose material in {directory}: {result['nodes']}")


@local_app.command("start-node")
def local_start_node(
    port: Annotated[int, typer.Argument(help="Port of the node to start.")],
    state_dir: StateDir = DEFAULT_STATE_DIR,
    json_out: JsonOut = False,
) -> None:
    """Start one stopped node with its data (e.g. after a crash drill)."""
    twin = Twin(state_dir)
    _require_node(twin, port)
    pid = twin.start_node(port)
    emit({"port": port, "pid": pid}) if json_out else out.print(f"started :{port} (pid {pid})")


@local_app.command("stop-node")
def local_stop_node(
    port: Annotated[int, typer.Argument(help="Port of the node to stop.")],
    kill: Annotated[bool, typer.Option("--kill", help="kill -9 (a crash), not SIGTERM.")] = False,
    state_dir: StateDir = DEFAULT_STATE_DIR,
    json_out: JsonOut = False,
) -> None:
    """Stop one node (SIGTERM, or a crash with --kill), for drills."""
    twin = Twin(state_dir)
    _require_node(twin, port)
    pid = twin.kill_node(port) if kill else twin.stop_node(port)
    emit({"port": port, "pid": pid}) if json_out else out.print(f"stopped :{port} (pid {pid})")


def _require_node(twin: Twin, port: int) -> None:
    ports = twin.settings().ports
    if port not in ports:
        raise ConfigError(
            f"port {port}: not a node of this twin; its nodes are {ports[0]}-{ports[-1]}"
        )


# ---- reconcile --------------------------------------------------------------------


@app.command("reconcile")
def reconcile_cmd(
    ctx: typer.Context,
    target: Annotated[
        str | None, typer.Option(help="'local' to reconcile the twin; else give --node etc.")
    ] = None,
    node: Annotated[
        list[str] | None,
        typer.Option(help="host:port[=zone] of a desired node, in order; repeat per node."),
    ] = None,
    shards: Annotated[int | None, typer.Option(help="Desired shards.")] = None,
    replicas: Annotated[int | None, typer.Option(help="Desired replicas per shard.")] = None,
    ca: Annotated[Path | None, typer.Option(help="CA certificate (PEM).")] = None,
    cert: Annotated[Path | None, typer.Option(help="Client certificate (PEM).")] = None,
    key: Annotated[Path | None, typer.Option(help="Client key (PEM).")] = None,
    user: Annotated[str, typer.Option(help="Redis user to act as.")] = acl.OPERATOR,
    password_file: Annotated[Path | None, typer.Option(help="File holding its password.")] = None,
    acl_file: Annotated[
        Path | None, typer.Option(help="Rendered ACL file every node must enforce.")
    ] = None,
    reload_tls: Annotated[
        bool, typer.Option("--reload-tls", help="Make every node re-read its certificates.")
    ] = False,
    admin_password_file: Annotated[
        Path | None, typer.Option(help="admin's password file (needed by --reload-tls).")
    ] = None,
    expect_node_cert: Annotated[
        Path | None,
        typer.Option(help="With --reload-tls: wait until every node serves this certificate."),
    ] = None,
    replication_password_file: Annotated[
        Path | None,
        typer.Option(help="With --reload-tls: also set masteruser/masterauth on every node."),
    ] = None,
    zones_from_kubernetes: Annotated[
        bool,
        typer.Option(
            "--zones-from-kubernetes",
            help="Read each pod's zone from the Kubernetes API (inside a pod).",
        ),
    ] = False,
    settle: Annotated[
        float,
        typer.Option(help="Seconds to retry nodes whose mounted ACL/certificate files lag."),
    ] = 0.0,
    dry_run: Annotated[
        bool,
        typer.Option(
            "--plan", "--dry-run", help="Print the plan and the findings; change nothing."
        ),
    ] = False,
    plan_file: Annotated[
        Path | None,
        typer.Option(
            help="Apply the plan saved by `reconcile --plan --json`, only if planning now gives "
            "exactly the same actions."
        ),
    ] = None,
    timeout: Annotated[float, typer.Option(help="Seconds to wait for convergence.")] = 60.0,
    state_dir: StateDir = DEFAULT_STATE_DIR,
    json_out: JsonOut = False,
) -> None:
    """Form, heal or scale the cluster, load ACLs, reload TLS; report drift as findings.

    Prints the plan (each action with its reason and risk) before anything changes;
    `--plan` stops there. Applying stops at the first failed action and says what was
    done and what remains. Exit 0 healthy, 1 findings or a failed action, 2 usage.
    """
    if target == "local":
        refuse_unused(
            "--target local (the twin supplies its shape, nodes, ACL file, certificates and "
            "credentials)",
            given_options(ctx, "node", "shards", "replicas", "ca", "cert", "key", "user",
                          "password_file", "acl_file", "admin_password_file",
                          "expect_node_cert", "replication_password_file",
                          "zones_from_kubernetes"),
        )  # fmt: skip
    elif not reload_tls:
        unused = given_options(
            ctx, "admin_password_file", "expect_node_cert", "replication_password_file"
        )
        if any(unused.values()):
            flags = ", ".join(flag for flag, given in unused.items() if given)
            raise ConfigError(f"{flags}: used only with --reload-tls; add it or drop them")
    client_certificate(cert, key)
    options = ReconcileOptions(
        reload_tls=reload_tls,
        dry_run=dry_run,
        timeout_s=timeout,
        mount_settle_s=settle,
        progress=logger.info,
        expected_plan=_read_plan(plan_file) if plan_file is not None else None,
        on_plan=None if json_out else _print_plan,
    )
    if plan_file is not None and dry_run:
        raise ConfigError("--plan-file applies a saved plan; drop --plan to apply it")
    if target == "local":
        twin = Twin(state_dir)
        settings = twin.settings()
        desired = settings.desired()
        tls = twin.client_tls(acl.OPERATOR)
        creds = twin.credentials(acl.OPERATOR)
        options.acl_text = twin.acl_text(settings)
        options.write_acl = twin.write_acl
        if reload_tls:
            options.admin = twin.credentials(acl.ADMIN)
    elif target is not None:
        raise ConfigError(f"--target {target!r}: only 'local' is known; or give --node etc.")
    else:
        missing = [
            name
            for name, value in (
                ("--node", node),
                ("--shards", shards),
                ("--replicas", replicas),
                ("--ca", ca),
                ("--password-file", password_file),
            )
            if not value and value != 0
        ]
        if missing:
            raise ConfigError(f"reconcile: {', '.join(missing)} required (or use --target local)")
        if node is None or shards is None or replicas is None or password_file is None:
            raise ConfigError("reconcile: --node, --shards, --replicas, --password-file needed")
        nodes = [parse_desired_node(n) for n in node]
        if zones_from_kubernetes:
            zones = kube.in_cluster_zones([n.endpoint.host for n in nodes])
            nodes = [
                n if n.zone else DesiredNode(endpoint=n.endpoint, zone=zones[n.endpoint.host])
                for n in nodes
            ]
            logger.info("zones: %s", ", ".join(f"{h}={z}" for h, z in zones.items()))
        try:
            desired = DesiredCluster(shards=shards, replicas=replicas, nodes=tuple(nodes))
        except ValueError as exc:
            raise ConfigError(f"reconcile: {_first_error(exc)}") from exc
        tls = TlsClient(
            ca_file=str(ca),
            cert_file=str(cert) if cert else None,
            key_file=str(key) if key else None,
        )
        creds = Credentials.from_file(user, password_file)
        if acl_file is not None:
            try:
                options.acl_text = acl_file.read_text()
            except OSError as exc:
                raise ConfigError(f"--acl-file {acl_file}: {exc.strerror}") from exc
        if admin_password_file is not None:
            options.admin = Credentials.from_file(acl.ADMIN, admin_password_file)
        if replication_password_file is not None:
            options.replication = Credentials.from_file(acl.REPLICATION, replication_password_file)
        if expect_node_cert is not None:
            try:
                options.expected_cert_pem = expect_node_cert.read_text()
            except OSError as exc:
                raise ConfigError(f"--expect-node-cert {expect_node_cert}: {exc.strerror}") from exc
    report = reconcile(desired, tls, creds, options)
    if json_out:
        emit(_report_json(report))
    else:
        _print_report(report)
    if not report.healthy:
        raise typer.Exit(1)


def _read_plan(path: Path) -> list[Action]:
    try:
        data = json.loads(path.read_text())
    except OSError as exc:
        raise ConfigError(f"--plan-file {path}: {exc.strerror}") from exc
    except json.JSONDecodeError as exc:
        raise ConfigError(f"--plan-file {path}: not JSON ({exc}); save `--plan --json`") from exc
    actions = data.get("actions") if isinstance(data, dict) else data
    try:
        return ACTIONS.validate_python(actions)
    except ValueError as exc:
        raise ConfigError(
            f"--plan-file {path}: not a reconcile plan ({_first_error(exc)}); save the output "
            "of `redisops reconcile --plan --json`"
        ) from exc


def _first_error(exc: ValueError) -> str:
    errors = getattr(exc, "errors", None)
    if callable(errors):
        first = errors()[0]
        return str(first.get("msg", exc)).removeprefix("Value error, ")
    return str(exc)


# ---- node (the Redis pod's start step) ----------------------------------------------

node_app = typer.Typer(
    help="Steps a Redis pod runs on itself (its init container), and node replacement."
)
app.add_typer(node_app, name="node")
cli_ops.register(app, node_app)


@node_app.command("prepare")
def node_prepare(
    data_dir: Annotated[Path, typer.Option(help="The node's data directory (holds nodes.conf).")],
    my_ip: Annotated[
        str | None, typer.Option(help="This pod's IP (Downward API status.podIP).")
    ] = None,
    json_out: JsonOut = False,
) -> None:
    """Point nodes.conf at the peers' current IPs, resolved from their pod DNS names."""
    if not data_dir.is_dir():
        raise ConfigError(f"--data-dir {data_dir}: not a directory; mount the node's volume")
    changes = node_start.prepare(data_dir, my_ip)
    if json_out:
        emit({"data_dir": str(data_dir), "changes": [vars(c) for c in changes]})
        return
    if not changes:
        out.print("nodes.conf: nothing to refresh")
    for change in changes:
        who = "myself" if change.myself else change.hostname
        out.print(f"{change.node_id[:8]} {who}: {change.old_ip} -> {change.new_ip}")


# ---- entry point ------------------------------------------------------------------


def main() -> None:
    """Run the CLI, turning errors into one line and the documented exit codes."""
    log.setup()
    try:
        app()  # exits by itself: 0, typer.Exit codes, or 2 for usage errors
    except RedisOpsError as exc:
        err.print(f"[red]error:[/red] {exc}", highlight=False, soft_wrap=True, markup=True)
        sys.exit(exc.exit_code)
    except (redis.RedisError, redis.exceptions.RedisClusterException) as exc:
        err.print(f"[red]error:[/red] Redis: {exc}", highlight=False, soft_wrap=True)
        sys.exit(1)
