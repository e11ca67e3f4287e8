"""PC-DARTS (Xu et al., ICLR 2020): partial-channel mixed edges and edge normalisation."""
