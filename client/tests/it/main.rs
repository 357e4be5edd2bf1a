//! Integration tests: the real `tracker` and `client` binaries on 127.0.0.1, driven through
//! the client's stdin exactly as a user's script would.
#![allow(clippy::unwrap_used)]

mod accounts;
mod admission;
mod at_rest;
mod attach;
mod browser;
mod cli;
mod downloads;
mod durability;
mod files;
mod folders;
mod groups;
mod hostile;
mod logins;
mod nat;
mod partitions;
mod repl;
mod replication;
mod robustness;
mod scripts;
mod secure_links;
mod service;
mod starve;
mod support;
mod transfer_control;
mod web;
