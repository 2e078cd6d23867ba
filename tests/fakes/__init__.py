"""Fake upstreams for tests: small aiohttp apps on 127.0.0.1 port 0 that always stop."""
