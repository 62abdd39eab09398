//! The Switchboard binary's library half: configuration, startup and the
//! CLI, so that integration tests start the same app the binary does.

pub mod app;
pub mod cli;
pub mod config;
