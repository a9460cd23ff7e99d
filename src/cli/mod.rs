//! The command line's subcommands beyond `run`: each in its own file, for
//! `main.rs` to call.

pub mod admin;
pub mod check;
pub mod doctor;
pub mod findings;
pub mod tunnel;
pub mod wireguard;
