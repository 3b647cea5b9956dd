"""Simulation of XRD-CT data: phantoms, powder patterns, chemical phantoms, pencil-beam scans, parallax."""
