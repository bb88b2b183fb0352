"""thunder_openhands."""
