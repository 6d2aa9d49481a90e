"""Real datasets shipped with annbench; installed as ``annbench.bundled``."""
