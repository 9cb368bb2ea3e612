"""Operator tools and the scripts that run inside the stack's containers."""
