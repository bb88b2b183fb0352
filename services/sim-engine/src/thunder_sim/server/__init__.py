"""The SGLang-compatible HTTP shell around the simulated engine (``thunder-sim serve``)."""
