"""The tiny profile: synthetic data, tiny pre-training and the feature net."""
