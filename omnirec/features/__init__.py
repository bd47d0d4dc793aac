"""Features: histories, interaction matrices."""
