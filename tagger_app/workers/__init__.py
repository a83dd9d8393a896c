"""Work off the GUI thread: thumbnails, image decoding, folder loading, prediction, sidecar writes."""
