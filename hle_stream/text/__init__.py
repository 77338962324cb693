"""Text events: how raw text becomes the features a learner takes (a frozen sentence encoder)."""
