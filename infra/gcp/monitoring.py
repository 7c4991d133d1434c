"""Alerting on Google Cloud: every alert of `redisops.alerts` as a Cloud Monitoring alert
policy with a PromQL condition (evaluated by Cloud Monitoring over the Managed Prometheus
data the PodMonitoring objects collect), routed by severity, and the on-call dashboard."""

from __future__ import annotations

import json

import pulumi
import pulumi_gcp.monitoring as monitoring

from infra.gcp.common import Cloud
from redisops import alerts, dashboards


class Alerting(pulumi.ComponentResource):
    """One AlertPolicy per selected alert (`alert-<AlertName>`): severity page goes to
    gcp.alerting.pageChannels, ticket to ticketChannels. And the Dashboard."""

    policies: dict[str, monitoring.AlertPolicy]
    dashboard: monitoring.Dashboard

    def __init__(
        self,
        resource_name: str,
        cloud: Cloud,
        params: alerts.AlertParams,
        opts: pulumi.ResourceOptions | None = None,
    ) -> None:
        super().__init__("redis-platform:gcp:Alerting", resource_name, None, opts)
        alerting = cloud.gcp.alerting
        assert alerting is not None  # the program builds it only with gcp.alerting
        self.policies = {}
        for policy in alerts.cloud_policies(params):
            inputs = dict(policy)
            name = inputs.pop("name")  # the alert's name, not an AlertPolicy input
            severity = alerts.BY_NAME[name].severity
            self.policies[name] = monitoring.AlertPolicy(
                f"alert-{name}",
                notification_channels=list(alerting.channels(severity)),
                user_labels=cloud.labels,
                **inputs,
                opts=cloud.opts(self),
            )
        title = f"redis-platform {pulumi.get_stack()}"
        self.dashboard = monitoring.Dashboard(
            "dashboard",
            dashboard_json=json.dumps(dashboards.cloud_dashboard(params, title), sort_keys=True),
            opts=cloud.opts(self),
        )
        self.register_outputs({"policies": sorted(self.policies)})
