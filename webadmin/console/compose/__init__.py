"""Compose (the seeds' PushAdmin): write a push, pick its audience, send now or later."""
