//! Enrich: names the service each exchange belongs to and the route template of its path.
pub mod route;

pub use route::{RouteLimits, RouteTable, template};
