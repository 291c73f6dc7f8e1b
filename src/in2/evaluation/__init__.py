"""Evaluation: VaL probing and, later, real-world and short-task guards."""
