"""Shared infrastructure: registry, config, checkpoints, logging, distributed helpers, seeding."""
