"""Push templates (the pymess template model) with a live preview rendered in the sandbox."""
