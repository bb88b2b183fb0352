"""thunder_langgraph."""
