//! Paddock: a self-hosted, multi-tenant WebAssembly host for IoT cloud apps.
//!
//! Apps are `wasm32-wasip2` components implementing the `paddock:app` WIT
//! world (`wit/`). Each event runs in a fresh, sandboxed instance with fuel,
//! time and memory limits; what the app wants to write comes back as
//! effects, to be committed atomically with the event's acknowledgement.
//!
//! - [`model`]: ids, channels, payload rules, events, the aggregate merge;
//! - [`manifest`]: app manifests (`paddock.toml`, Doover's `doover_config.json`);
//! - [`caps`]: capabilities and their policy, over a read view and an effect buffer;
//! - [`runtime`]: the wasmtime sandbox that runs one event and returns a [`runtime::Report`];
//! - [`store`]: the sled store: state, the durable queue, dead letters, the atomic commit;
//! - [`engine`]: ingress, routing, the dispatcher, retries and dead letters;
//! - [`monitors`]: push what committed to external clients (Device Cloud's Monitor API);
//! - [`plugins`]: the plugins directory, loaded at start and watched;
//! - [`tenants`]: organisations, agents, tokens and ingestion endpoints, created one way;
//! - [`api`]: the HTTP API (`/v1`), ingestion endpoints, OAuth callback, metrics;
//! - [`console`]: the web console (server-rendered pages at `/`);
//! - [`serve`]: `paddock serve`, the server process;
//! - [`cli`]: the `paddock` command line (`invoke`, `schema`, `serve`).

pub mod api;
pub mod caps;
pub mod cli;
pub mod console;
pub mod engine;
pub mod manifest;
pub mod model;
pub mod monitors;
pub mod plugins;
pub mod runtime;
pub mod serve;
pub mod store;
pub mod tenants;

#[cfg(test)]
mod fuzz;
