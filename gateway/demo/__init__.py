"""Insight Gateway."""
