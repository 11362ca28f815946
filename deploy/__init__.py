"""How Flywheel runs: settings, the `flywheel` CLI, the local stack and production manifests."""
