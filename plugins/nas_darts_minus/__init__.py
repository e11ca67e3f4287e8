"""DARTS- (Chu et al., ICLR 2021): an auxiliary skip connection outside the softmax, its weight decaying to 0."""
