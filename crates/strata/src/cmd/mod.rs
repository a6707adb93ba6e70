pub mod build;
pub mod completion;
pub mod copy;
pub mod inspect;
pub mod login;
pub mod ls;
pub mod manifest;
pub mod mount;
pub mod repack;
pub mod rm;
pub mod tags;
pub mod unpack;

/// Exit code after Ctrl-C / SIGTERM (128 + SIGINT, as shells report it).
pub const EXIT_INTERRUPTED: i32 = 130;

/// SIGINT and SIGTERM, watched from the moment this is made (so none is missed, and neither
/// kills the process with its default action any more).
pub struct Interrupts {
    int: Option<tokio::signal::unix::Signal>,
    term: Option<tokio::signal::unix::Signal>,
}

impl Interrupts {
    pub fn watch() -> Interrupts {
        use tokio::signal::unix::{SignalKind, signal};
        Interrupts {
            int: signal(SignalKind::interrupt()).ok(),
            term: signal(SignalKind::terminate()).ok(),
        }
    }

    /// The next SIGINT or SIGTERM (never, if neither could be watched).
    pub async fn recv(&mut self) {
        async fn next(s: &mut Option<tokio::signal::unix::Signal>) {
            match s {
                Some(s) => {
                    s.recv().await;
                }
                None => std::future::pending::<()>().await,
            }
        }
        tokio::select! {
            _ = next(&mut self.int) => {}
            _ = next(&mut self.term) => {}
        }
    }
}
