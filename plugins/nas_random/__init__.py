"""Honest baselines (Liu et al., ICLR 2019, section 3.2): random search over any registered space
(``nas random``, selected with plugin nas_select's protocol) and weight-sharing random search."""
