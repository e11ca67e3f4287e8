"""DARTS (Liu et al., ICLR 2019) as built-in plugins: CNN space, softmax relaxation,
first/second-order architect, top-k discretizer, image datasets and presets."""
