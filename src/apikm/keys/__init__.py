"""The key domain: format, hashing, policy rules, tables and the lifecycle service."""
