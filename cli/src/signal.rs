//! Ctrl-C, caught from the moment we start listening (not from the first poll), so that a
//! Ctrl-C arriving between two awaits is never the default "die at once".

/// A Ctrl-C listener.
pub(crate) struct CtrlC {
    #[cfg(unix)]
    signal: Option<tokio::signal::unix::Signal>,
}

impl CtrlC {
    /// Starts listening. Must run inside the runtime.
    pub(crate) fn listen() -> CtrlC {
        CtrlC {
            #[cfg(unix)]
            signal: tokio::signal::unix::signal(tokio::signal::unix::SignalKind::interrupt()).ok(),
        }
    }

    /// Waits for a Ctrl-C (one pressed since [`CtrlC::listen`] counts); never returns when
    /// Ctrl-C cannot be caught here.
    pub(crate) async fn recv(&mut self) {
        #[cfg(unix)]
        {
            if let Some(signal) = self.signal.as_mut()
                && signal.recv().await.is_some()
            {
                return;
            }
        }
        #[cfg(not(unix))]
        {
            if tokio::signal::ctrl_c().await.is_ok() {
                return;
            }
        }
        std::future::pending::<()>().await;
    }
}
