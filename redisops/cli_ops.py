"""`redisops failover`, `redisops scale` and `redisops node replace`: the verbs the
procedures in runbooks/ run. Each prints its plan (reason and risk per action) before
it changes anything, `--plan` stops there; exit 0 done and healthy, 1 an action failed
or the cluster is unhealthy afterwards, 2 usage or cannot run."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table

from redisops import acl, health
from redisops.cli_common import (
    CaOpt,
    CertOpt,
    JsonOut,
    KeyOpt,
    PasswordFileOpt,
    StateDir,
    TargetOpt,
    UserOpt,
    cluster_access,
    emit,
    logger,
    out,
    parse_desired_node,
    refuse_unused,
)
from redisops.errors import ConfigError, OperationError
from redisops.health import Reads
from redisops.local.settings import DEFAULT_STATE_DIR, HOST
from redisops.local.twin import Twin
from redisops.ops import (
    Cluster,
    Mode,
    OpReport,
    failover,
    plan_replacement,
    record_scale_in,
    scale,
    wipe_node_dir,
)
from redisops.topology import DesiredCluster

DesiredNodeOpt = Annotated[
    list[str] | None,
    typer.Option("--node", help="host:port[=zone] of a desired node, in ordinal order; repeat."),
]
ShardsOpt = Annotated[int | None, typer.Option("--shards", help="The deployed shards.")]
ReplicasOpt = Annotated[int | None, typer.Option("--replicas", help="Deployed replicas per shard.")]
PlanOpt = Annotated[bool, typer.Option("--plan", help="Print the plan; change nothing.")]
TimeoutOpt = Annotated[float, typer.Option(help="Seconds each step may wait.")]


def operate_on(
    *,
    target: str | None,
    state_dir: Path,
    nodes: list[str] | None,
    shards: int | None,
    replicas: int | None,
    ca: Path | None,
    cert: Path | None,
    key: Path | None,
    user: str | None,
    password_file: Path | None,
    timeout: float,
) -> tuple[Cluster, Twin | None]:
    """The cluster to operate on: `--target local` or explicit desired nodes."""
    if target == "local":
        refuse_unused(
            "--target local (the twin supplies its shape, nodes and credentials)",
            {"--node": nodes, "--shards": shards is not None, "--replicas": replicas is not None,
             "--ca": ca, "--cert": cert, "--key": key, "--user": user,
             "--password-file": password_file},
        )  # fmt: skip
        twin = Twin(state_dir)
        settings = twin.settings()
        cluster = Cluster(
            settings.desired(),
            twin.client_tls(acl.OPERATOR),
            twin.credentials(acl.OPERATOR),
            acl_text=twin.acl_text(settings),
            write_acl=twin.write_acl,
            progress=logger.info,
            timeout_s=timeout,
        )
        return cluster, twin
    access = cluster_access(
        acl.OPERATOR, target=target, state_dir=state_dir,
        nodes=[n.partition("=")[0] for n in nodes] if nodes else None,
        ca=ca, cert=cert, key=key, user=user, password_file=password_file,
    )  # fmt: skip
    if shards is None or replicas is None:
        raise ConfigError(
            "with --node: the deployed shape is required (--shards/--replicas, for "
            "`redisops scale` --deployed-shards/--deployed-replicas)"
        )
    desired_nodes = tuple(parse_desired_node(n) for n in nodes or [])
    try:
        desired = DesiredCluster(shards=shards, replicas=replicas, nodes=desired_nodes)
    except ValueError as exc:
        raise ConfigError(f"--node/--shards/--replicas: {exc}") from exc
    cluster = Cluster(
        desired, access.tls, access.credentials, progress=logger.info, timeout_s=timeout
    )
    return cluster, None


def _table(report: OpReport) -> Table:
    title = f"{report.operation}: {'plan' if report.planned_only else 'applied'}"
    table = Table(title=title, title_justify="left")
    for column in ("#", "action", "risk", "reason", "state"):
        table.add_column(column, overflow="fold")
    for i, action in enumerate(report.actions):
        if report.planned_only:
            state = "planned"
        elif report.failed is not None and i == report.failed.index:
            state = "[red]failed[/red]"
        else:
            state = "done" if i < report.done else "not started"
        table.add_row(str(i + 1), action.message, action.risk, action.reason, state)
    return table


def _finish(report: OpReport, json_out: bool, next_step: str | None = None) -> None:
    data: dict[str, Any] = report.model_dump(mode="json")
    data.update(ok=report.ok, next_step=next_step)
    if json_out:
        emit(data)
    else:
        out.print(_table(report))
        if report.failed is not None:
            out.print(f"[red]stopped[/red] at {report.failed.message}: {report.failed.error}")
        for f in report.findings:
            out.print(f"  {f.severity} {f.code} {f.node or ''}: {f.message}")
        if next_step and report.ok:
            out.print(f"next: {next_step}")
        out.print(f"{'ok' if report.ok else 'NOT OK'} in {report.duration_s} s")
    if not report.ok:
        raise typer.Exit(1)


def failover_cmd(
    shard: Annotated[int, typer.Option("--shard", help="Shard number (by first slot, from 0).")],
    force: Annotated[
        bool, typer.Option("--force", help="The primary is down: take over without it.")
    ] = False,
    takeover: Annotated[
        bool,
        typer.Option(
            "--takeover", help="No majority of primaries: take over without any agreement."
        ),
    ] = False,
    replica: Annotated[
        str | None, typer.Option(help="host:port of the replica to promote (default: chosen).")
    ] = None,
    plan: PlanOpt = False,
    target: TargetOpt = None,
    node: DesiredNodeOpt = None,
    shards: ShardsOpt = None,
    replicas: ReplicasOpt = None,
    ca: CaOpt = None,
    cert: CertOpt = None,
    key: KeyOpt = None,
    user: UserOpt = None,
    password_file: PasswordFileOpt = None,
    timeout: TimeoutOpt = 60.0,
    state_dir: StateDir = DEFAULT_STATE_DIR,
    json_out: JsonOut = False,
) -> None:
    """Promote a replica of shard N: graceful (no write lost), --force, or --takeover."""
    if force and takeover:
        raise ConfigError("--force and --takeover: choose one (--takeover when no majority)")
    mode: Mode = "FORCE" if force else "TAKEOVER" if takeover else ""
    cluster, _ = operate_on(
        target=target, state_dir=state_dir, nodes=node, shards=shards, replicas=replicas,
        ca=ca, cert=cert, key=key, user=user, password_file=password_file, timeout=timeout,
    )  # fmt: skip
    _finish(failover(cluster, shard, mode, replica, plan_only=plan), json_out)


def scale_cmd(
    to_shards: Annotated[int | None, typer.Option("--shards", help="Shards to keep.")] = None,
    to_replicas: Annotated[
        int | None, typer.Option("--replicas", help="Replicas per shard to keep.")
    ] = None,
    plan: PlanOpt = False,
    target: TargetOpt = None,
    node: DesiredNodeOpt = None,
    shards: Annotated[
        int | None, typer.Option("--deployed-shards", help="With --node: the shards running.")
    ] = None,
    replicas: Annotated[
        int | None,
        typer.Option("--deployed-replicas", help="With --node: the replicas per shard running."),
    ] = None,
    ca: CaOpt = None,
    cert: CertOpt = None,
    key: KeyOpt = None,
    user: UserOpt = None,
    password_file: PasswordFileOpt = None,
    timeout: TimeoutOpt = 600.0,
    state_dir: StateDir = DEFAULT_STATE_DIR,
    json_out: JsonOut = False,
) -> None:
    """Scale in: move every slot off the shards that go (highest ordinals first), make
    their nodes and surplus replicas leave, then say how to shrink the deployment."""
    cluster, twin = operate_on(
        target=target, state_dir=state_dir, nodes=node, shards=shards, replicas=replicas,
        ca=ca, cert=cert, key=key, user=user, password_file=password_file, timeout=timeout,
    )  # fmt: skip
    if to_shards is None and to_replicas is None:
        raise ConfigError("scale: give --shards and/or --replicas (the shape to keep)")
    new_shards = cluster.desired.shards if to_shards is None else to_shards
    new_replicas = cluster.desired.replicas if to_replicas is None else to_replicas
    report = scale(cluster, new_shards, new_replicas, plan_only=plan)
    was = report.details["from"]
    if twin is not None:
        step = f"redisops local up --shards {new_shards} --replicas {new_replicas}"
        if report.ok and not plan:
            record_scale_in(twin.layout.root / "scale-in.json", report)
    else:
        step = (
            f"set redis.shards: {new_shards}, redis.replicas: {new_replicas} and "
            f'redis.acknowledgeScaleInFrom: "{was}" in the stack config, then `pulumi up`'
        )
    _finish(report, json_out, None if plan else step)


def node_replace_cmd(
    port: Annotated[int, typer.Option("--port", help="The twin node's port.")],
    plan: PlanOpt = False,
    timeout: TimeoutOpt = 120.0,
    state_dir: StateDir = DEFAULT_STATE_DIR,
    json_out: JsonOut = False,
) -> None:
    """The twin's equivalent of a new PVC: stop the node, wipe its data and cluster
    state, start it empty; reconcile forgets the old id and gives it its place back (a
    primary is failed over first, so no shard is lost)."""
    cluster, twin = operate_on(
        target="local", state_dir=state_dir, nodes=None, shards=None, replicas=None, ca=None,
        cert=None, key=None, user=None, password_file=None, timeout=timeout,
    )  # fmt: skip
    assert twin is not None
    settings = twin.settings()
    if port not in settings.ports:
        raise ConfigError(f"--port {port}: not a node of the twin ({settings.ports[0]}..)")
    started = time.monotonic()
    name = f"{settings.host_of(port)}:{port}"
    runner = cluster.reconciler()
    try:
        replacement = plan_replacement(runner.observe(), name)
    finally:
        runner.close()
    old_id = replacement.node_id
    if replacement.failover_shard is not None:
        report = failover(cluster, replacement.failover_shard, "", None, plan_only=plan)
        if not report.ok:
            _finish(report, json_out)
    if plan:
        emit({"port": port, "old_id": old_id, "plan": "stop, wipe, start, reconcile"})
        return
    me = next((n for n in twin.status()["nodes"] if n["port"] == port), None)
    if me and me.get("running"):
        twin.stop_node(port)
    removed = wipe_node_dir(twin.layout.node_dir(port))
    twin.start_node(port)
    twin.wait_responding(settings)
    final = cluster.reconcile()
    new: dict[str, Any] = next((n for n in twin.status()["nodes"] if n["port"] == port), {})
    report = OpReport(
        operation="node replace",
        actions=final.actions,
        done=final.done,
        failed=final.failed,
        findings=final.findings,
        details={
            "port": port,
            "old_id": old_id,
            "new_id": new.get("node_id"),
            "role": new.get("role"),
            "wiped": removed,
        },
        duration_s=round(time.monotonic() - started, 3),
    )
    if report.ok and new.get("node_id") == old_id:
        raise OperationError(f"node :{port} kept its id {old_id}: it was not replaced")
    _finish(report, json_out)


def health_cmd(
    wait: Annotated[
        float, typer.Option(help="Seconds to wait for a healthy, settled cluster (0: judge once).")
    ] = 0.0,
    target: TargetOpt = None,
    node: DesiredNodeOpt = None,
    shards: ShardsOpt = None,
    replicas: ReplicasOpt = None,
    ca: CaOpt = None,
    cert: CertOpt = None,
    key: KeyOpt = None,
    user: UserOpt = None,
    password_file: PasswordFileOpt = None,
    state_dir: StateDir = DEFAULT_STATE_DIR,
    json_out: JsonOut = False,
) -> None:
    """The cluster judged by the health model reconcile, backup and smoke share: slots,
    roles, links, epochs, reachability, the function library. Exit 0 healthy and settled,
    1 not (after --wait seconds)."""
    cluster, _ = operate_on(
        target=target, state_dir=state_dir, nodes=node, shards=shards, replicas=replicas,
        ca=ca, cert=cert, key=key, user=user, password_file=password_file, timeout=wait,
    )  # fmt: skip
    deadline = time.monotonic() + wait
    runner = cluster.reconciler()
    try:
        while True:
            judged = health.judge(cluster.desired, runner.observe(Reads(functions=True)))
            if judged.settled or time.monotonic() >= deadline:
                break
            time.sleep(0.25)
    finally:
        runner.close()
    data = {
        "ok": judged.settled,
        "primaries": judged.primaries,
        "replicas": judged.replicas,
        "problems": judged.problems(settled=True),
        "findings": [f.model_dump(mode="json") for f in judged.findings],
    }
    if json_out:
        emit(data)
    else:
        for f in judged.findings:
            out.print(f"  {f.severity} {f.code} {f.node or ''}: {f.message}")
        verdict = "healthy" if judged.settled else "NOT healthy"
        out.print(f"{verdict}: {judged.primaries} primaries, {judged.replicas} replicas")
    if not judged.settled:
        raise typer.Exit(1)


def register(app: typer.Typer, node_app: typer.Typer) -> None:
    app.command("health")(health_cmd)
    app.command("failover")(failover_cmd)
    app.command("scale")(scale_cmd)
    node_app.command("replace")(node_replace_cmd)


__all__ = ["HOST", "register"]
