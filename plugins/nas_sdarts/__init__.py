"""SDARTS (Chen & Hsieh, ICML 2020): the weight step trains under randomly or adversarially perturbed mixing weights."""
