"""Serving: the event store, the service over a bundle, the HTTP app."""
