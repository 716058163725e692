"""Synthetic traffic for analysis: a seeded conversation generator and its sinks."""

from analytics.simulate.generator import Profile, SimEvent, Simulator

__all__ = ["Profile", "SimEvent", "Simulator"]
