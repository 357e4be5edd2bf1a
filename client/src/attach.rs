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
//! not the client. An attached terminal first sends `WANT_NOTICES`; from then on the
//! client's notices (a join request, a download that ended: `notice`) reach it as lines of
//! their own, a NUL byte then the text, between answers (never inside one), and print above
//! its prompt.
//!
//! Bounds: `MAX_ATTACHED` connections at once (one thread each, and one more for the
//! notices of a terminal), lines of at most `repl::MAX_LINE_LEN` bytes, writes that give
//! up after `WRITE_TIMEOUT` (a connection that stops reading ends).

use std::io::{self, BufRead, BufReader, IsTerminal, Write};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use crate::console::{Console, Flow};
use crate::interrupt::Interrupt;
use crate::notice::Notices;
use crate::peer::Peer;
use crate::repl;

/// The socket's name in the state directory.
pub const SOCKET_NAME: &str = "control.sock";
/// Connections served at once, at most; more are told so and closed.
const MAX_ATTACHED: usize = 8;
/// The line that ends each answer.
const END: &[u8] = b"\0\n";
/// The line an attached terminal sends first, to be sent notices.
const WANT_NOTICES: &[u8] = b"\0notices\n";
/// A write to an attached REPL that takes longer ends its connection.
const WRITE_TIMEOUT: Duration = Duration::from_secs(10);
/// The prompt of an attached REPL on a terminal.
const PROMPT: &str = "attached> ";

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
    pub fn start(
        state_dir: &Path,
        peer: Arc<Peer>,
        notices: Arc<Notices>,
    ) -> io::Result<ControlSocket> {
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
            move || accept_loop(&listener, &peer, &notices, &stop)
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

fn accept_loop(
    listener: &UnixListener,
    peer: &Arc<Peer>,
    notices: &Arc<Notices>,
    stop: &AtomicBool,
) {
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
        let (peer, notices, attached) =
            (Arc::clone(peer), Arc::clone(notices), Arc::clone(&attached));
        let spawned =
            std::thread::Builder::new().name(format!("attach-{next_id}")).spawn(move || {
                if let Err(e) = serve(stream, peer, &notices) {
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

/// One attached REPL: a command line in, its output and `END` out, until `exit` or the end;
/// notices too once asked for (`WANT_NOTICES`).
fn serve(stream: UnixStream, peer: Arc<Peer>, notices: &Arc<Notices>) -> io::Result<()> {
    stream.set_write_timeout(Some(WRITE_TIMEOUT))?;
    let mut console = Console::new(peer, Arc::new(Interrupt::default()));
    let mut input = BufReader::new(stream.try_clone()?);
    let out = Arc::new(parking_lot::Mutex::new(stream));
    let mut forwarder = None;
    let mut line = Vec::new();
    let result = loop {
        line.clear();
        let n = match io::Read::take(&mut input, repl::MAX_LINE_LEN as u64 + 1)
            .read_until(b'\n', &mut line)
        {
            Ok(n) => n,
            Err(e) => break Err(e),
        };
        if n == 0 {
            break Ok(());
        }
        if line == WANT_NOTICES {
            if forwarder.is_none() {
                forwarder = forward_notices(notices, &out);
            }
            continue;
        }
        let mut answer = Vec::new();
        let flow = match std::str::from_utf8(&line) {
            Ok(text) if line.len() <= repl::MAX_LINE_LEN || text.ends_with('\n') => {
                match repl::execute_line(&mut console, text, &mut answer) {
                    Ok(flow) => flow,
                    Err(e) => break Err(e),
                }
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
        if let Err(e) = out.lock().write_all(&answer) {
            break Err(e);
        }
        if flow == Flow::Exit {
            break Ok(());
        }
    };
    // Dropping the subscription ends the forwarder's loop.
    if let Some((subscription, thread)) = forwarder {
        drop(subscription);
        let _ = thread.join();
    }
    result
}

/// Sends `notices` to the attached terminal at `out`, each as one line (a NUL byte, the
/// text) written whole between answers, on a thread of its own until the subscription is
/// dropped or a write fails; `None` when no more subscribers are taken.
fn forward_notices(
    notices: &Arc<Notices>,
    out: &Arc<parking_lot::Mutex<UnixStream>>,
) -> Option<(crate::notice::Subscription, JoinHandle<()>)> {
    let subscription = notices.subscribe()?;
    let (receiver, out) = (subscription.receiver.clone(), Arc::clone(out));
    let thread = std::thread::Builder::new().name("attach-notices".into()).spawn(move || {
        for notice in receiver {
            let mut line = vec![0u8];
            line.extend(notice.replace('\n', " ").as_bytes());
            line.push(b'\n');
            if out.lock().write_all(&line).is_err() {
                return;
            }
        }
    });
    match thread {
        Ok(thread) => Some((subscription, thread)),
        Err(e) => {
            log::warn!("attach: no notices: {e}");
            None
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
    // Notices (a join request, a download that ended) only for a person at a terminal.
    let terminal = command.is_none() && io::stdin().is_terminal();
    let attached = Attached::new(stream, terminal);
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

/// The attaching side of a connection. A `listen` thread reads everything the client
/// sends: it prints answers and notices as they come and tells `ask` when an answer ended.
struct Attached {
    out: UnixStream,
    /// Each answer's end (whether it printed an `error: ` line), or how the connection ended.
    ended: crossbeam_channel::Receiver<io::Result<bool>>,
    /// Whether the prompt is shown and nothing typed was sent yet (a notice then reprints it).
    prompting: Arc<AtomicBool>,
    terminal: bool,
}

impl Attached {
    /// Attached over `stream`; a `terminal` asks for notices.
    fn new(mut stream: UnixStream, terminal: bool) -> io::Result<Attached> {
        if terminal {
            stream.write_all(WANT_NOTICES)?;
        }
        let input = BufReader::new(stream.try_clone()?);
        let (tell, ended) = crossbeam_channel::bounded(1);
        let prompting = Arc::new(AtomicBool::new(false));
        std::thread::Builder::new().name("listen".into()).spawn({
            let prompting = Arc::clone(&prompting);
            move || listen(input, &tell, &prompting)
        })?;
        Ok(Attached { out: stream, ended, prompting, terminal })
    }

    /// Sends `command` and waits until its answer is printed; whether it printed an
    /// `error: ` line.
    fn ask(&mut self, command: &str) -> io::Result<bool> {
        let line = command.replace('\n', " ");
        self.out.write_all(format!("{line}\n").as_bytes())?;
        self.ended.recv().unwrap_or_else(|_| Err(io::ErrorKind::UnexpectedEof.into()))
    }

    /// Reads commands from stdin (with a prompt at a terminal) until `exit` or its end.
    fn repl(&mut self) -> io::Result<()> {
        let stdin = io::stdin();
        let mut line = String::new();
        loop {
            if self.terminal {
                let mut stdout = io::stdout().lock();
                write!(stdout, "{PROMPT}")?;
                stdout.flush()?;
                self.prompting.store(true, Ordering::SeqCst);
            }
            line.clear();
            let n = stdin.lock().read_line(&mut line)?;
            self.prompting.store(false, Ordering::SeqCst);
            if n == 0 {
                return Ok(());
            }
            self.ask(line.trim_end_matches('\n'))?;
            if line.trim() == "exit" {
                return Ok(());
            }
        }
    }
}

/// The `listen` thread: prints what the client sends (answers, and notices above the
/// prompt) and tells each answer's end, until the connection ends.
fn listen(
    mut input: BufReader<UnixStream>,
    tell: &crossbeam_channel::Sender<io::Result<bool>>,
    prompting: &AtomicBool,
) {
    let mut failed = false;
    let mut line = Vec::new();
    loop {
        line.clear();
        match input.read_until(b'\n', &mut line) {
            Ok(0) => {
                let _ = tell.send(Err(io::ErrorKind::UnexpectedEof.into()));
                return;
            }
            Err(e) => {
                let _ = tell.send(Err(e));
                return;
            }
            Ok(_) => {}
        }
        let mut stdout = io::stdout().lock();
        let printed = if line == END {
            let _ = tell.send(Ok(std::mem::take(&mut failed)));
            stdout.flush()
        } else if let Some(notice) = line.strip_prefix(b"\0") {
            // Above the prompt: the prompt line is cleared, the notice printed, the prompt
            // printed again (what was typed is still in the terminal's line buffer).
            match prompting.load(Ordering::SeqCst) {
                true => stdout
                    .write_all(b"\r\x1b[2K")
                    .and_then(|()| stdout.write_all(notice))
                    .and_then(|()| stdout.write_all(PROMPT.as_bytes())),
                false => stdout.write_all(notice),
            }
            .and_then(|()| stdout.flush())
        } else {
            failed |= line.starts_with(b"error: ");
            stdout.write_all(&line)
        };
        if printed.is_err() {
            let _ = tell.send(Err(io::ErrorKind::BrokenPipe.into()));
            return;
        }
    }
}
