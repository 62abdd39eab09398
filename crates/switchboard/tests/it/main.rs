//! Integration tests of the whole gateway: a real server on a loopback port,
//! a real SQLite database in a temporary directory, the real simulator.
//! One binary for all of them (see ARCHITECTURE.md).

mod adapters;
mod api;
mod browser;
mod callbacks;
mod cli;
mod consent;
mod console;
mod crash;
mod dispatch;
mod harness;
mod idle;
mod inbound;
mod multi_node;
mod providers;
mod quiet_hours;
mod receiver;
mod templates;
mod webhooks;
