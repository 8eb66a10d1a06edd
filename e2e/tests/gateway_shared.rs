//! The gateway tests that share one default [`support::GatewayWorld`] (one controller, one
//! gateway) and never stop, signal or replace its processes, linked as one binary so that they
//! pay for one link and one world instead of three:
//!
//! * [`gateway_story`]: the gateway as a person sees it;
//! * [`gateway_errors`]: every error code, with its HTTP status and fields;
//! * [`gateway_chain`]: tamper evidence: an edited transcript chunk is named by the API and
//!   `nodeshell transcript verify`;
//! * [`gateway_ledger`]: the `NodeShell-Shell` document's command ledger and the audited
//!   reads of a recording;
//! * [`gateway_edges`]: transcript failures, resume tokens, Closing, large transcripts,
//!   reattach grace;
//! * [`gateway_limits`]: slow and oversized requests, the connection limit, oversized
//!   WebSocket messages, the admin listener.
//! * [`gateway_login`]: the console's sign-in through the gateway (own gateways that share
//!   the world's simulator and controller), and STS refusing every token a person can get on
//!   their own.
//! * [`gateway_recycle`]: Session Manager's hourly `1000 Bye` resumed with no byte lost or
//!   repeated, console credentials re-minted across their expiry, `CredentialsExpired`;
//! * [`gateway_audit_schema`]: real audit rows match docs/audit-row.schema.json and carry
//!   the source address, user agent, typed reason (also in SSM's Reason), policy, gateway;
//! * [`gateway_monitoring`]: the real `/metrics` pass `promtool check metrics` and cover the
//!   dashboard and the alerts; cluster-wide gauges come from the leader only.
//!
//! Binaries whose tests kill or restart shared processes (`gateway_faults`,
//! `gateway_lifecycle`) or need another world shape (`gateway_caps`) stay on their own.
//! Run one part with a filter: `cargo test --test gateway_shared -- gateway_errors::`.

mod support;

mod gateway_audit_schema;
mod gateway_chain;
mod gateway_edges;
mod gateway_errors;
mod gateway_ledger;
mod gateway_limits;
mod gateway_login;
mod gateway_monitoring;
mod gateway_recycle;
mod gateway_story;
