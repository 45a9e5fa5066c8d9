"""Renderers: turn plain data into pictures. No renderer computes an analysis."""
