"""One module per CLI command: each parses its options and calls the library."""
