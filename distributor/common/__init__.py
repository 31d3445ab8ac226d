"""Leaf modules every stage may import: they import nothing of the distributor's."""
