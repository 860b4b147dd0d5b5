"""Health checking: active checks, passive outlier detection, the server state machine."""
