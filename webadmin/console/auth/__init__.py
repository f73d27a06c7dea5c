"""Sign-in, sign-out and first-run."""
