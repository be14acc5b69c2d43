//! Internals of the `modelauth` command that its benchmarks share: the load generator
//! behind `modelauth bench`. Not a stable API; embed the library crates instead
//! (`provider-auth`, `model-client`, `realtime`, `proxy`).

pub mod load;
