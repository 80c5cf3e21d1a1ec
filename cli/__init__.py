"""The `ragtune` command: the composition root (settings built once), one thin module per
command group, each calling the service that does the work."""
