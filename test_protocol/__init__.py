"""Evaluation protocols (objects with ``process`` / ``compute``) and pairs parsers."""
