"""What the platform declares in Kubernetes, one ComponentResource per concern."""
