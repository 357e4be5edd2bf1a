//! Ctrl-C (SIGINT) interrupts the REPL's command in flight, never the client (issue 10).
//!
//! The `sigint` thread (signal-hook's iterator) only calls `Interrupt::fire`: it sets a
//! flag, shuts down the socket of the REPL's tracker call in flight (so a blocked read
//! returns at once) and wakes the waiters (`wait_downloads`). The command sees the flag
//! and fails with an `error: ` line; the REPL clears the flag before each command, so a
//! Ctrl-C between commands cancels nothing. Calls made by other threads (heartbeats,
//! downloads, the seeder) never look at it. Only SIGINT is caught: SIGTERM and SIGHUP
//! still end the client (scripts stop clients with SIGTERM). Not the `ctrlc` crate: Cargo
//! unifies its features across the workspace, and the tracker's `termination` would make
//! the client catch SIGTERM and SIGHUP too.

use std::net::{Shutdown, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use parking_lot::Mutex;

/// The REPL's interrupt flag, shared with the signal handler.
#[derive(Default)]
pub struct Interrupt {
    fired: AtomicBool,
    /// The socket of the tracker call in flight, if any.
    socket: Mutex<Option<TcpStream>>,
    /// Woken on every interrupt.
    wakers: Mutex<Vec<Box<dyn Fn() + Send + Sync>>>,
}

impl Interrupt {
    /// Makes SIGINT fire `interrupt` instead of ending the process, from a `sigint` thread
    /// that lives as long as the process.
    pub fn install(interrupt: &Arc<Interrupt>) -> std::io::Result<()> {
        let mut signals = signal_hook::iterator::Signals::new([signal_hook::consts::SIGINT])?;
        let interrupt = Arc::clone(interrupt);
        std::thread::Builder::new().name("sigint".into()).spawn(move || {
            for _ in signals.forever() {
                log::info!("interrupted (SIGINT)");
                interrupt.fire();
            }
        })?;
        Ok(())
    }

    /// Interrupts the command in flight.
    pub fn fire(&self) {
        self.fired.store(true, Ordering::SeqCst);
        if let Some(socket) = self.socket.lock().as_ref() {
            let _ = socket.shutdown(Shutdown::Both);
        }
        for wake in self.wakers.lock().iter() {
            wake();
        }
    }

    /// Whether the command in flight was interrupted.
    pub fn is_fired(&self) -> bool {
        self.fired.load(Ordering::SeqCst)
    }

    /// Forgets an interrupt that came before the command about to run.
    pub fn reset(&self) {
        self.fired.store(false, Ordering::SeqCst);
    }

    /// Calls `wake` on every interrupt (it must not block, and must not call back here).
    pub fn on_fire(&self, wake: impl Fn() + Send + Sync + 'static) {
        self.wakers.lock().push(Box::new(wake));
    }

    /// Shuts `socket` down on an interrupt until the guard is dropped; at once if the
    /// interrupt came already.
    pub fn watch_socket(&self, socket: &TcpStream) -> SocketWatch<'_> {
        let clone = socket.try_clone().ok();
        let mut slot = self.socket.lock();
        // `fire` sets the flag before it takes this lock: either it finds the socket here,
        // or the flag is seen set below.
        if self.is_fired() {
            let _ = socket.shutdown(Shutdown::Both);
        }
        *slot = clone;
        SocketWatch { interrupt: self }
    }
}

/// Ends `Interrupt::watch_socket` on drop.
pub struct SocketWatch<'a> {
    interrupt: &'a Interrupt,
}

impl Drop for SocketWatch<'_> {
    fn drop(&mut self) {
        *self.interrupt.socket.lock() = None;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;
    use std::net::TcpListener;

    #[test]
    fn fire_sets_the_flag_wakes_and_reset_clears_it() {
        let interrupt = Interrupt::default();
        let woken = Arc::new(AtomicBool::new(false));
        let w = Arc::clone(&woken);
        interrupt.on_fire(move || w.store(true, Ordering::SeqCst));
        assert!(!interrupt.is_fired());
        interrupt.fire();
        assert!(interrupt.is_fired() && woken.load(Ordering::SeqCst));
        interrupt.reset();
        assert!(!interrupt.is_fired());
    }

    #[test]
    fn a_watched_socket_is_shut_down_even_if_the_interrupt_came_first() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let interrupt = Interrupt::default();
        interrupt.fire();
        let mut stream = TcpStream::connect(addr).unwrap();
        let _accepted = listener.accept().unwrap();
        let watch = interrupt.watch_socket(&stream);
        // A shut-down socket reads end of file at once instead of blocking.
        assert_eq!(stream.read(&mut [0u8; 8]).unwrap(), 0);
        drop(watch);
        assert!(interrupt.socket.lock().is_none());
    }
}
