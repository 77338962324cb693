"""``hle-stream bench``: scenarios × methods × seeds on an HLE stream, with a report."""
