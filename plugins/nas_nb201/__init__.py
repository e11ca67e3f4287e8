"""The NAS-Bench-201 search space (Dong & Yang, ICLR 2020): its cell, network, genotype strings and benchmark file."""
