"""Everything that touches Redis: keys, snapshots, outbox, locks, heartbeat."""
