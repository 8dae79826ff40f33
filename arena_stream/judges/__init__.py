"""Judges: how a battle becomes a verdict (two games, positions swapped, one rule)."""
