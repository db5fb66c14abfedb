"""Plotting (scanpy's :mod:`scanpy.pl` works on everything sclatent writes)."""

__all__: list[str] = []
