//! Shared steps for the whole-pipeline tests.
