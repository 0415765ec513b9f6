"""Layer tests, one file per layer family, all through harness.check_layer."""
