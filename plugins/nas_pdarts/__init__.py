"""P-DARTS (Chen et al., ICCV 2019): progressively deeper supernets with pruned op sets, skip-connect dropout and a cap on skips."""
