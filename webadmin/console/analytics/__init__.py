"""Analytics: sends and opens over time, by platform, source and offer; charts with their tables and CSV."""
