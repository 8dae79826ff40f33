"""Ratings: incremental Elo, Bradley-Terry with intervals, stream snapshots, and the audit."""
