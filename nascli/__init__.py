"""nascli: neural architecture search for semantic segmentation, from one command line."""

__version__ = "0.1.0"
