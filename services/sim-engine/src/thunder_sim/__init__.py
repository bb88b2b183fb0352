"""Simulated SGLang engine and trace replay."""

__version__ = "0.1.0"
