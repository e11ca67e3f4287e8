"""The selection protocol (Liu et al., ICLR 2019, section 3.2): ``nas select`` (searches with N seeds,
a short training of each cell, the best by validation, the final evaluation) and ``nas compare``
(the paper's Table 1). ``nas random`` (plugin nas_random) selects among its candidates with the same
protocol (``nas_select.protocol``)."""
