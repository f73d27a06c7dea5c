"""Settings: apps and their API keys, delivery options, a link to the API docs (admins change, all read)."""
