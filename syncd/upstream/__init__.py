"""Upstream adapters: the shared retrying HTTP client and one module per vendor API.

Adapters implement the core's ports (``syncd.sync.ports``, ``syncd.jobs.ports``) and never touch
the store.
"""
