"""Campaigns: the list, a detail page with live progress, controls and the per-message log."""
