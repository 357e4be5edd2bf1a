//! Control of a running client from another terminal or a script (issue 20, SPEC
//! "Controlling a running client"): `client --attach [--profile NAME | --state-dir DIR]
//! [-c COMMAND]`.
//!
//! The running client listens on `<state-dir>/control.sock`, a Unix socket (mode 0600, in
//! the 0700 state directory) that takes connections only from its own OS user (checked
//! with `SO_PEERCRED`). Each connection is a REPL over the same `Peer` as the console and
//! the dashboard, through the same `repl::execute_line`: no command has a second
//! implementation, and the output is the REPL's on a pipe. The protocol is lines: a command
//! line in; its output, then a line holding one NUL byte, out. `exit` ends the connection,
//! not the client.
//!
//! Bounds: `MAX_ATTACHED` connections at once (one thread each), lines of at most
//! `repl::MAX_LINE_LEN` bytes.

use std::io::{self, BufRead, BufReader, IsTerminal, Write};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;

use crate::console::{Console, Flow};
use crate::interrupt::Interrupt;
use crate::peer::Peer;
use crate::repl;

/// The socket's name in the state directory.
pub const SOCKET_NAME: &str = "control.sock";
/// Connections served at once, at most; more are told so and closed.
const MAX_ATTACHED: usize = 8;
/// The line that ends each answer.
const END: &[u8] = b"\0\n";

/// The exit status of `--attach` when no client runs on the state directory.
pub const NO_CLIENT: i32 = 2;

/// The running client's control socket.
pub struct ControlSocket {
    path: PathBuf,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl ControlSocket {
    /// Listens on `<state_dir>/control.sock` for attached REPLs over `peer`. A socket left
    /// there by a client that was killed is replaced (this process holds the state
    /// directory's lock, so no other client uses it).
    pub fn start(state_dir: &Path, peer: Arc<Peer>) -> io::Result<ControlSocket> {
        let path = state_dir.join(SOCKET_NAME);
        match std::fs::remove_file(&path) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(e),
            _ => {}
        }
        let listener = UnixListener::bind(&path)?;
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600))?;
        let stop = Arc::new(AtomicBool::new(false));
        let thread = std::thread::Builder::new().name("attach".into()).spawn({
            let stop = Arc::clone(&stop);
            move || accept_loop(&listener, &peer, &stop)
        })?;
        Ok(ControlSocket { path, stop, thread: Some(thread) })
    }

    /// Stops accepting (attached connections end with the process) and removes the socket.
    pub fn stop(mut self) {
        self.stop.store(true, Ordering::SeqCst);
        // Wakes the accept.
        let _ = UnixStream::connect(&self.path);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
        let _ = std::fs::remove_file(&self.path);
    }
}

fn accept_loop(listener: &UnixListener, peer: &Arc<Peer>, stop: &AtomicBool) {
    let attached = Arc::new(AtomicUsize::new(0));
    let mut next_id = 0u64;
    for stream in listener.incoming() {
        if stop.load(Ordering::SeqCst) {
            return;
        }
        let Ok(mut stream) = stream else { continue };
        if !same_user(&stream) {
            log::warn!("attach: refused a connection from another user");
            continue;
        }
        if attached.fetch_add(1, Ordering::SeqCst) >= MAX_ATTACHED {
            attached.fetch_sub(1, Ordering::SeqCst);
            let _ = stream.write_all(b"error: too many attached sessions; close one\n\0\n");
            continue;
        }
        next_id += 1;
        let (peer, attached) = (Arc::clone(peer), Arc::clone(&attached));
        let spawned =
            std::thread::Builder::new().name(format!("attach-{next_id}")).spawn(move || {
                if let Err(e) = serve(stream, peer) {
                    log::debug!("attach: connection ended: {e}");
                }
                attached.fetch_sub(1, Ordering::SeqCst);
            });
        if let Err(e) = spawned {
            log::error!("attach: cannot start a thread: {e}");
        }
    }
}

/// Whether the other end of `stream` runs as this process's user.
fn same_user(stream: &UnixStream) -> bool {
    rustix::net::sockopt::socket_peercred(stream)
        .is_ok_and(|cred| cred.uid == rustix::process::getuid())
}

/// One attached REPL: a command line in, its output and `END` out, until `exit` or the end.
fn serve(stream: UnixStream, peer: Arc<Peer>) -> io::Result<()> {
    let mut console = Console::new(peer, Arc::new(Interrupt::default()));
    let mut input = BufReader::new(stream.try_clone()?);
    let mut out = stream;
    let mut line = Vec::new();
    loop {
        line.clear();
        let n = io::Read::take(&mut input, repl::MAX_LINE_LEN as u64 + 1)
            .read_until(b'\n', &mut line)?;
        if n == 0 {
            return Ok(());
        }
        let mut answer = Vec::new();
        let flow = match std::str::from_utf8(&line) {
            Ok(text) if line.len() <= repl::MAX_LINE_LEN || text.ends_with('\n') => {
                repl::execute_line(&mut console, text, &mut answer)?
            }
            Ok(_) => {
                answer.extend(
                    format!("error: line longer than {} bytes\n", repl::MAX_LINE_LEN).as_bytes(),
                );
                Flow::Exit
            }
            Err(_) => {
                answer.extend(b"error: input is not valid UTF-8\n");
                Flow::Continue
            }
        };
        answer.extend(END);
        out.write_all(&answer)?;
        if flow == Flow::Exit {
            return Ok(());
        }
    }
}

/// `client --attach`: a REPL on the client running on `state_dir`, or with `command` that
/// one command. Returns the exit status: 0, 1 when a command printed an `error: ` line
/// (with `command`), or `NO_CLIENT` when no client runs there.
pub fn run(state_dir: &Path, command: Option<&str>) -> i32 {
    let path = state_dir.join(SOCKET_NAME);
    let stream = match UnixStream::connect(&path) {
        Ok(stream) => stream,
        Err(e) => {
            eprintln!(
                "error: no client runs on {} ({}); start one there (client IP:PORT tracker_info.txt --serve, with the same --profile or --state-dir)",
                state_dir.display(),
                reason(&e)
            );
            return NO_CLIENT;
        }
    };
    let attached = Attached::new(stream);
    let result = match command {
        Some(command) => attached.and_then(|mut a| a.ask(command)).map(i32::from),
        None => attached.and_then(|mut a| a.repl()).map(|()| 0),
    };
    result.unwrap_or_else(|e| {
        eprintln!("error: the connection to the client ended: {}", reason(&e));
        1
    })
}

fn reason(e: &io::Error) -> String {
    if e.raw_os_error() == Some(libc::ENAMETOOLONG) || e.kind() == io::ErrorKind::InvalidInput {
        return "its path is too long for a Unix socket (107 bytes at most): use a shorter --state-dir".to_string();
    }
    match e.kind() {
        io::ErrorKind::NotFound => "no socket".to_string(),
        io::ErrorKind::ConnectionRefused => "nobody listens on its socket".to_string(),
        io::ErrorKind::PermissionDenied => "permission denied".to_string(),
        _ => e.to_string(),
    }
}

/// The attaching side of a connection.
struct Attached {
    input: BufReader<UnixStream>,
    out: UnixStream,
}

impl Attached {
    fn new(stream: UnixStream) -> io::Result<Attached> {
        Ok(Attached { input: BufReader::new(stream.try_clone()?), out: stream })
    }

    /// Sends `command` and prints its answer on stdout; whether it printed an `error: `
    /// line.
    fn ask(&mut self, command: &str) -> io::Result<bool> {
        let line = command.replace('\n', " ");
        self.out.write_all(format!("{line}\n").as_bytes())?;
        let mut stdout = io::stdout().lock();
        let mut failed = false;
        let mut answer = Vec::new();
        loop {
            answer.clear();
            if self.input.read_until(b'\n', &mut answer)? == 0 {
                return Err(io::ErrorKind::UnexpectedEof.into());
            }
            if answer == END {
                stdout.flush()?;
                return Ok(failed);
            }
            failed |= answer.starts_with(b"error: ");
            stdout.write_all(&answer)?;
        }
    }

    /// Reads commands from stdin (with a prompt at a terminal) until `exit` or its end.
    fn repl(&mut self) -> io::Result<()> {
        let stdin = io::stdin();
        let prompt = stdin.is_terminal();
        let mut line = String::new();
        loop {
            if prompt {
                print!("attached> ");
                io::stdout().flush()?;
            }
            line.clear();
            if stdin.lock().read_line(&mut line)? == 0 {
                return Ok(());
            }
            self.ask(line.trim_end_matches('\n'))?;
            if line.trim() == "exit" {
                return Ok(());
            }
        }
    }
}
