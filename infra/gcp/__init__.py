"""The Google Cloud layer: network, GKE, backup bucket, identities, Secret Manager,
Artifact Registry, the SSE edge, and alerting (alert policies, dashboard, uptime check)."""
