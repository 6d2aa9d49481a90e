"""Default parameter grids, one YAML file per backend; installed as ``annbench.default_grids``."""
