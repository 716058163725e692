"""Shadow replay: a candidate model answers recorded traffic on topics no user reads."""
