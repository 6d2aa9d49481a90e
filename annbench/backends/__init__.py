"""Backend adapters, one module per library; registered in setup.cfg's entry points."""
