"""GDAS (Dong & Yang, CVPR 2019): hard Gumbel-softmax sampling, one op per edge per step."""
