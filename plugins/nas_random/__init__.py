"""Honest baselines (DARTS.md section 7): random search over any registered space, weight-sharing
random search, the seed-selection protocol (``nas select``) and ``nas compare``."""
