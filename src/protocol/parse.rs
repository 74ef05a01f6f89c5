//! Parsing one command line (without its CRLF) into a command.
