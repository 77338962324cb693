"""Live measures of what the daemon serves and learns: prequential accuracy, served-path quality and
the confidence threshold calibrated from it. Used by the daemon and the benchmark alike."""
