"""syncd.web package."""
