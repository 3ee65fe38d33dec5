"""avblocks: typed, shape-checked building blocks for generating sounding video."""
__version__ = "0.1.0"
