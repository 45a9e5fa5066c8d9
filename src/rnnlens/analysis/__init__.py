"""Analyses: take a Trace (and text), return plain data; renderers draw it."""
