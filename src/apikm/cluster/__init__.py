"""What replicas share beyond the key tables: change events (cache invalidation, address
blocks) read by every replica."""
