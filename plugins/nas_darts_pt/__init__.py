"""DARTS-PT (Wang et al., ICLR 2021): perturbation-based selection of each edge's op on a trained supernet."""
