"""syncd.jobs package."""
