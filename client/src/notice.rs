//! Notices: lines for the user that come from other threads (a download ended, a group
//! passed to the user, a request was decided). On a terminal the REPL gives them a sink
//! that prints them above the prompt and the half-typed line (rustyline's external
//! printer); on a pipe there is none and they are dropped, so pipe output stays as SPEC
//! has it.

use crossbeam_channel::Sender;
use parking_lot::Mutex;

/// Where notices go, if anywhere.
#[derive(Default)]
pub struct Notices {
    sink: Mutex<Option<Sender<String>>>,
}

impl Notices {
    /// From now on notices go to `sink` (`None`: nowhere).
    pub fn set_sink(&self, sink: Option<Sender<String>>) {
        *self.sink.lock() = sink;
    }

    /// Whether notices are shown (a terminal).
    pub fn is_shown(&self) -> bool {
        self.sink.lock().is_some()
    }

    /// Shows `line` (without its newline) if there is a sink.
    pub fn send(&self, line: String) {
        if let Some(sink) = self.sink.lock().as_ref() {
            let _ = sink.send(format!("{line}\n"));
        }
    }
}
