"""Transfer evaluation: train a cell found on one task on another, through the evaluator hook."""
