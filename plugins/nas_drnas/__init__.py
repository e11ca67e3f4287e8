"""DrNAS (Chen et al., ICLR 2021): Dirichlet mixing weights, a KL or L2 regulariser, a progressive staged search."""
