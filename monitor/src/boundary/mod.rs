//! Boundary: every server-side exchange checked against the declared policy.
pub mod policy;

pub use policy::Policy;
