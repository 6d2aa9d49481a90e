"""Scale: growth curves, memory models and predictions at sizes not measured."""
