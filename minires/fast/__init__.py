"""The speed layer: fast versions of the reference ops in minires/ops/, pinned equal by tests."""
