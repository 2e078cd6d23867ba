"""syncd.sync package."""
