"""Baselines on the same episode API as MetaDiff: the gradient-based family and prototype networks."""
