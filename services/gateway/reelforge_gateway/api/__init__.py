"""HTTP edge of the gateway."""
