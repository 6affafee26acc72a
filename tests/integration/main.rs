//! The integration tests: one binary, one module per layer.

mod smoke;
