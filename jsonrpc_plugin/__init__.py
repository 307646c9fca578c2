"""The per-host ``sriov-migrationd`` JSON-RPC service and its CLI."""
