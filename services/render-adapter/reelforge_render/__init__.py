"""Render adapter: one interface in front of every video provider and GPU pool."""
