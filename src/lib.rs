//! nodeshell: audited shells on the EC2 host behind a Kubernetes node, opened through AWS
//! Systems Manager Session Manager with the person's own short-lived credentials.
//!
//! Modules follow the flow of a session: [`api`] (the custom resources) feeds the
//! [`controller`] (admission, expiry, retention); [`ssm`] is the native data-channel client
//! (no Kubernetes knowledge); [`aws`] holds the STS/SSM calls; [`sim`] is the AWS simulator
//! used by tests and the local demo; [`localcluster`] runs a real kube-apiserver and etcd on
//! loopback for tests and `nodeshell dev`. Those three ([`sim`], [`localcluster`], [`dev`]) are
//! built only with the `dev` cargo feature (on by default; off in the production image).
#![forbid(unsafe_code)]

pub mod api;
pub mod aws;
pub mod cli;
pub mod controller;
#[cfg(feature = "dev")]
pub mod dev;
pub mod duration;
pub mod gateway;
pub mod kube_client;
#[cfg(feature = "dev")]
pub mod localcluster;
pub mod process_metrics;
pub mod shutdown;
#[cfg(feature = "dev")]
pub mod sim;
pub mod ssm;
pub mod telemetry;
#[cfg(test)]
pub(crate) mod testing;
pub mod verification;
