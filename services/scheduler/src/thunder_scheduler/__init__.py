"""Thunder scheduler service."""
