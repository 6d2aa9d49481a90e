"""Results: the record, the store, analyses, recommendation, deployment output."""
