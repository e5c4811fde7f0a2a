"""minority.nets."""
