"""Raw-corpus readers shared by several tasks (a task never imports another task's package)."""
