"""restore: bring a shard back from its backups into any target, and prove it equal."""
