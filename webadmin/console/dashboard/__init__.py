"""The dashboard: the console's home."""
