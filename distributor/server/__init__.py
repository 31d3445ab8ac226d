"""The server port: status, readiness, metrics and the user-configurable overrides API."""
