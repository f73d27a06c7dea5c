"""SMS: the SMS channel in Settings (admins change it, all read) and the SMS fallback fragments of other pages."""
