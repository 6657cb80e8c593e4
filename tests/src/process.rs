//! Child processes that die with their guard.
