"""minority.core."""
