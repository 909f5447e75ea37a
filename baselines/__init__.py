"""Comparison methods, one module each, registered by name with `mona.registry.register`."""
