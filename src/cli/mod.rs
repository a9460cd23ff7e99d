//! The command line's subcommands beyond `run`: each in its own file, for
//! `main.rs` to call.

pub mod admin;
pub mod check;
pub mod doctor;
pub mod findings;
pub mod tunnel;
pub mod wireguard;

/// The runtime a command that talks to a running drawbridge (or to home)
/// runs its few requests on.
pub fn current_thread() -> anyhow::Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?)
}
