"""Differential-privacy mechanisms, all noise sampled by OpenDP."""
