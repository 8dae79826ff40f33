"""The stages of the stream, one module each: plain functions, testable without a broker."""
