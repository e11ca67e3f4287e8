"""OLES (Jiang et al., NeurIPS 2023): candidate ops whose training and validation gradients disagree stop training."""
