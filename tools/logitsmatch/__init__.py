"""logitsmatch: numerics regression suite for Megatron-Core inference."""

__version__ = "0.1.0"
