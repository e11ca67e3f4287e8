"""A deliberately straightforward DARTS engine: the baseline the benchmarks compare against."""
