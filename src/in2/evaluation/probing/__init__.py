"""VaL probing: position-robustness probes (build, run, score, report)."""
