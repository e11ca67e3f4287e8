"""Tasks (image classification) and the datasets and trainers they use."""
