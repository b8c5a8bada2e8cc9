//! Integration tests of the image sources.
