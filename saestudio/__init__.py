"""SAE Studio: train sparse autoencoders and transcoders on transformer activations."""

__version__ = "0.1.0"
