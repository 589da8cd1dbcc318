"""Model families: one module per family behind the ModelFamily seam (filled in by sd3.py)."""
