"""The hash-chained decision log and its archive."""
