"""Streaming image data from Hugging Face `datasets` (hub id or local files), split across ranks."""

from distgan.data.source import Source, resolve_source
from distgan.data.stream import ImageStream

__all__ = ["ImageStream", "Source", "resolve_source"]
