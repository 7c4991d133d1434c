"""The SSE proxy's public edge on Google Cloud: the global static IP its Ingress uses
(the Google-managed certificate comes with the chart's ManagedCertificate), an optional
DNS record, and an uptime check on /healthz with its alert policy (`SseProxyUnreachable`,
one of `redisops.alerts.EXTERNAL_ALERTS`: not PromQL, so defined here)."""

from __future__ import annotations

import pulumi
import pulumi_gcp.compute as compute
import pulumi_gcp.dns as dns
import pulumi_gcp.monitoring as monitoring

from infra.gcp.common import Cloud

ALERT = "SseProxyUnreachable"
RUNBOOK = f"runbooks/{ALERT}.md"


class Edge(pulumi.ComponentResource):
    """The static address (proxy.staticIpName), its DNS record (gcp.alerting.dnsZone), and
    the uptime check with its alert policy (gcp.alerting): each where its settings are."""

    address: compute.GlobalAddress | None

    def __init__(
        self, resource_name: str, cloud: Cloud, opts: pulumi.ResourceOptions | None = None
    ) -> None:
        super().__init__("redis-platform:gcp:Edge", resource_name, None, opts)
        proxy = cloud.settings.proxy
        assert proxy.hostname  # the program builds an Edge only for a public hostname
        self.address = None
        if proxy.static_ip_name:
            self.address = compute.GlobalAddress(
                "address",
                name=proxy.static_ip_name,
                address_type="EXTERNAL",
                ip_version="IPV4",
                description=f"SSE proxy {proxy.hostname}",
                opts=cloud.opts(self),
            )
        alerting = cloud.gcp.alerting
        if alerting is not None and alerting.dns_zone and self.address is not None:
            dns.RecordSet(
                "dns",
                managed_zone=alerting.dns_zone,
                name=f"{proxy.hostname}.",
                type="A",
                ttl=300,
                rrdatas=[self.address.address],
                opts=cloud.opts(self),
            )
        self.uptime_check: monitoring.UptimeCheckConfig | None = None
        if alerting is not None:
            self.uptime_check = monitoring.UptimeCheckConfig(
                "uptime",
                display_name=f"SSE proxy {proxy.hostname} /healthz",
                timeout="10s",
                period="60s",
                http_check={
                    "path": "/healthz",
                    "port": 443,
                    "use_ssl": True,
                    "validate_ssl": True,
                    "accepted_response_status_codes": [{"status_class": "STATUS_CLASS_2XX"}],
                },
                monitored_resource={
                    "type": "uptime_url",
                    "labels": {"project_id": cloud.gcp.project, "host": proxy.hostname},
                },
                opts=cloud.opts(self),
            )
            check_filter = self.uptime_check.uptime_check_id.apply(
                lambda check_id: (
                    'metric.type="monitoring.googleapis.com/uptime_check/check_passed" '
                    'AND resource.type="uptime_url" '
                    f'AND metric.label.check_id="{check_id}"'
                )
            )
            runbook = f"{cloud.settings.monitoring.runbook_base_url}/{ALERT}.md"
            monitoring.AlertPolicy(
                "uptime-alert",
                display_name=ALERT,
                combiner="OR",
                conditions=[
                    {
                        "display_name": "/healthz fails from several regions",
                        "condition_threshold": {
                            "filter": check_filter,
                            "comparison": "COMPARISON_GT",
                            "threshold_value": 1,
                            "duration": "120s",
                            "aggregations": [
                                {
                                    "alignment_period": "1200s",
                                    "per_series_aligner": "ALIGN_NEXT_OLDER",
                                    "cross_series_reducer": "REDUCE_COUNT_FALSE",
                                    "group_by_fields": ["resource.label.*"],
                                }
                            ],
                            "trigger": {"count": 1},
                        },
                    }
                ],
                notification_channels=list(alerting.channels("page")),
                documentation={
                    "subject": f"[page] {ALERT}",
                    "content": f"https://{proxy.hostname}/healthz fails from several regions: "
                    f"browsers cannot reach the SSE proxy.\n\nRunbook: {runbook}",
                    "mime_type": "text/markdown",
                },
                severity="CRITICAL",
                user_labels=cloud.labels,
                opts=cloud.opts(self),
            )
        self.register_outputs({"address": self.address.address if self.address else None})
