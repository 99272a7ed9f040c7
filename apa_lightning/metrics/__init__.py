"""Metrics computed from results, with their tables and figures."""
