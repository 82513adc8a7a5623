//! The HTTP transport, in one place: [`crate::DtmClient`] (DTM's HTTP API),
//! [`crate::JsonRpcClient`] (its JSON-RPC API, on the same port), the HTTP stack every call
//! goes through (a `reqwest::Client`, or the caller's middleware), and the HTTP side of the
//! bounds. Everything else in the crate is independent of the protocol.

pub(crate) mod bounds;
pub(crate) mod client;
pub mod jsonrpc;
pub mod stack;
