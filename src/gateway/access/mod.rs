//! The control side's rooms: who the caller is ([`auth`]), which tier they hold
//! ([`tiers`]), and the decisions and Kubernetes calls behind each route. No HTTP here: the
//! routes in `http` ask, this answers.

pub mod auth;
pub mod eligibility;
pub mod tickets;
pub mod tiers;
