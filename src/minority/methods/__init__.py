"""Sampling methods: one frozen dataclass per method, registered by name."""

from minority.methods.base import all_methods, get_method, make_config, register_method

__all__ = ["all_methods", "get_method", "make_config", "register_method"]
