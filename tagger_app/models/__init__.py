"""Qt item models over the library: images, tags."""
