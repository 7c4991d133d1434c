"""The VPC: one subnet with secondary ranges for pods and services (VPC-native GKE),
Cloud NAT so private nodes reach the internet (image pulls outside Artifact Registry),
and, when backups may only reach private.googleapis.com, the private DNS zone that sends
*.googleapis.com there (else storage.googleapis.com resolves to public addresses the
NetworkPolicy blocks)."""

from __future__ import annotations

import ipaddress

import pulumi
import pulumi_gcp.compute as compute
import pulumi_gcp.dns as dns

from infra.gcp.common import Cloud

PODS_RANGE = "pods"
SERVICES_RANGE = "services"
# Private Google Access through private.googleapis.com (Google's documented range).
PRIVATE_GOOGLE_APIS = ipaddress.IPv4Network("199.36.153.8/30")


def needs_private_google_dns(google_apis_cidrs: tuple[str, ...]) -> bool:
    """Whether Google APIs are reachable only through private.googleapis.com."""
    networks = [ipaddress.ip_network(c) for c in google_apis_cidrs]
    return bool(networks) and all(
        isinstance(n, ipaddress.IPv4Network) and n.subnet_of(PRIVATE_GOOGLE_APIS) for n in networks
    )


class Network(pulumi.ComponentResource):
    network: compute.Network
    subnet: compute.Subnetwork

    def __init__(
        self, resource_name: str, cloud: Cloud, opts: pulumi.ResourceOptions | None = None
    ) -> None:
        super().__init__("redis-platform:gcp:Network", resource_name, None, opts)
        gcp, name = cloud.gcp, cloud.gcp.gke.name
        vpc = gcp.gke.vpc
        self.network = compute.Network(
            "vpc",
            name=name,
            auto_create_subnetworks=False,
            routing_mode="REGIONAL",
            opts=cloud.opts(self),
        )
        self.subnet = compute.Subnetwork(
            "subnet",
            name=f"{name}-{gcp.region}",
            region=gcp.region,
            network=self.network.id,
            ip_cidr_range=vpc.subnet_cidr,
            private_ip_google_access=True,  # private nodes reach Google APIs (backups)
            secondary_ip_ranges=[
                {"range_name": PODS_RANGE, "ip_cidr_range": vpc.pods_cidr},
                {"range_name": SERVICES_RANGE, "ip_cidr_range": vpc.services_cidr},
            ],
            log_config={"aggregation_interval": "INTERVAL_5_MIN", "flow_sampling": 0.5},
            opts=cloud.opts(self),
        )
        router = compute.Router(
            "router", name=name, region=gcp.region, network=self.network.id, opts=cloud.opts(self)
        )
        compute.RouterNat(
            "nat",
            name=name,
            router=router.name,
            region=gcp.region,
            nat_ip_allocate_option="AUTO_ONLY",
            source_subnetwork_ip_ranges_to_nat="ALL_SUBNETWORKS_ALL_IP_RANGES",
            log_config={"enable": True, "filter": "ERRORS_ONLY"},
            opts=cloud.opts(self),
        )
        if needs_private_google_dns(cloud.settings.network.google_apis_cidrs):
            zone = dns.ManagedZone(
                "googleapis",
                name=f"{name}-googleapis",
                dns_name="googleapis.com.",
                visibility="private",
                description="Google APIs through private.googleapis.com (Private Google Access)",
                private_visibility_config={"networks": [{"network_url": self.network.id}]},
                opts=cloud.opts(self),
            )
            dns.RecordSet(
                "private-googleapis",
                managed_zone=zone.name,
                name="private.googleapis.com.",
                type="A",
                ttl=300,
                rrdatas=[str(ip) for ip in PRIVATE_GOOGLE_APIS],
                opts=cloud.opts(self),
            )
            dns.RecordSet(
                "all-googleapis",
                managed_zone=zone.name,
                name="*.googleapis.com.",
                type="CNAME",
                ttl=300,
                rrdatas=["private.googleapis.com."],
                opts=cloud.opts(self),
            )
        self.register_outputs({"network": self.network.id, "subnet": self.subnet.id})
