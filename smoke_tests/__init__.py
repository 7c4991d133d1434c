"""The post-rollout smoke suite: proves health, TLS, ACLs and failover on a live target."""
