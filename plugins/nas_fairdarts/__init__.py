"""FairDARTS (Chu et al., ECCV 2020): sigmoid mixing weights, the zero-one loss, threshold derivation."""
