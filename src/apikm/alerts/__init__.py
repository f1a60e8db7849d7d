"""Alerts on suspicious use of a key: a new network, a retired secret presented again, a
limit tripped. Detected in memory on the verification path, written in batches by a
background writer as ``audit_events`` rows (which the notifier and the UI read)."""
