"""Training of the embedded offline models (``minority train``) and their registry."""

from minority.embedded import EmbeddedModel, embedded_models, resolve_embedded

__all__ = ["EmbeddedModel", "embedded_models", "resolve_embedded"]
