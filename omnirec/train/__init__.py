"""Training of the neural models: one plain loop, shared losses."""
