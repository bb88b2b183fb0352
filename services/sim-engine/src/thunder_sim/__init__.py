"""Simulated SGLang engine and trace replay."""
