"""Loopback fakes of third-party HTTP services, driven by the real client libraries in tests."""
