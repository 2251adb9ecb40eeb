"""Evaluation protocols of the papers."""
