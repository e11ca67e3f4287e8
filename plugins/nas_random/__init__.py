"""Honest baselines (Liu et al., ICLR 2019, section 3.2): random search over any registered space,
weight-sharing random search, the seed-selection protocol (``nas select``) and ``nas compare``."""
