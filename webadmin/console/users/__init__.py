"""Staff accounts and the audit log (admins only)."""
