"""RobustDARTS (Zela et al., ICLR 2020): the dominant eigenvalue of the architecture Hessian, early stopping (DARTS-ES) and adaptive regularisation (DARTS-ADA)."""
