"""minority.runs."""
