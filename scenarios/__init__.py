"""The scenario library: one module per scenario, each defining ``scenario = Scenario(...)``."""
