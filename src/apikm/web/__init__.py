"""HTTP: the app factory, the JSON API, forward auth, ops endpoints and the web UI."""
