"""Every differentiable op, one family per file, forward and backward side by side."""
