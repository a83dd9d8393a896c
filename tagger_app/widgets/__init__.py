"""Widgets: gallery, viewer with overlays, tag panel, (later) training panel."""
