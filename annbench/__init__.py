"""annbench: benchmark approximate-nearest-neighbour indexes and pick one for deployment."""

__version__ = "0.1.0"
