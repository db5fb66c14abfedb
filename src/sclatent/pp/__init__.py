"""Preprocessing (scanpy's :mod:`scanpy.pp` covers what sclatent needs; nothing of its own yet)."""

__all__: list[str] = []
