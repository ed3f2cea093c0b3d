//! Boundary: every server-side exchange checked against the declared policy.
pub mod evaluate;
pub mod learn;
pub mod policy;

pub use evaluate::{Evaluator, Finding, Severity};
pub use policy::Policy;

#[cfg(test)]
mod tests;
