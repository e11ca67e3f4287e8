"""Scheduled op pruning: the weakest ops of every edge dropped at given epochs, so the supernet computes fewer."""
