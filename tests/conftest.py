"""Shared fixtures: tiny generated corpora in every input format the readers accept."""
