"""SNAS (Xie et al., ICLR 2019): a relaxed Gumbel-softmax sample per step, weights and architecture descending one loss."""
