"""Device simulators (separate processes on pseudo-terminals) and the harness that starts them."""
