"""Drop-in compatibility with CS Group's APIKeyManager (issue 11): its API under its old
paths (``/auth/...``, ``/k/<key>/...``), its settings' names, and the import of its keys.

Everything here is a thin layer over apikm's own services: the same verifier, key service,
policy and audit. Nothing here is a second implementation of the rules.
"""
