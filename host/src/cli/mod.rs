//! The `paddock` command line.
