"""The small page ``GET /`` serves: pick or drop a photo, see the recognised landmark and the top results."""

from __future__ import annotations

PAGE_HTML = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>landmark</title></head>
<body><h1>Landmark search</h1><p>POST an image to /search or /recognize.</p></body></html>
"""
