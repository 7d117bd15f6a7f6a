"""The suites of scripts/bench, one module each; ``cli`` holds the command line."""
