"""Audience: subscribers, devices, groups, CSV import and export."""
