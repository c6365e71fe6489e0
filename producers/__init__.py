"""Change capture: slot and publication, the initial snapshot, pgoutput decoding, the
translation into journal records, and the capture daemon loop."""
