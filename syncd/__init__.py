"""syncd: inventory sync daemon (SQLite mirror + change log)."""

__version__ = "0.1.0"
