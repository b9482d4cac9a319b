"""Label Studio integration: provisioning, drafted mask tasks, webhooks, reconciliation, agreement, oracle."""
