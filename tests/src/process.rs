//! A child process (a service or the broker) that the test can stop, kill
//! and restart with the same configuration. Killed on drop.
use std::collections::HashMap;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

pub struct Process {
    pub name: String,
    program: PathBuf,
    args: Vec<String>,
    env: HashMap<String, String>,
    cwd: Option<PathBuf>,
    log: PathBuf,
    child: Option<Child>,
}

/// Where cargo put the workspace's binaries: next to this test's own `deps/`.
pub fn binary(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("test executable path");
    let dir = exe
        .parent()
        .and_then(Path::parent)
        .expect("target profile dir");
    let path = dir.join(name);
    assert!(
        path.exists(),
        "{} not found: run `cargo build --workspace --bins` first (deploy/local/test.sh does)",
        path.display()
    );
    path
}

/// The broker binary, from PATH or cargo's bin dir.
pub fn nisshi() -> PathBuf {
    if let Ok(p) = std::env::var("SECKILL_TEST_NISSHI_BIN") {
        return PathBuf::from(p);
    }
    let home = std::env::var("HOME").unwrap_or_default();
    let candidates = std::env::var("PATH")
        .unwrap_or_default()
        .split(':')
        .map(|d| PathBuf::from(d).join("nisshi"))
        .chain([PathBuf::from(home).join(".cargo/bin/nisshi")])
        .collect::<Vec<_>>();
    candidates
        .into_iter()
        .find(|p| p.exists())
        .expect("nisshi not found: deploy/local/test.sh installs it")
}

pub fn log_dir() -> PathBuf {
    let dir = std::env::var("SECKILL_TEST_STATE_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|_| std::env::temp_dir().join("seckill-tests"));
    let dir = dir.join("logs");
    std::fs::create_dir_all(&dir).expect("log dir");
    dir
}

impl Process {
    pub fn new(
        name: &str,
        program: PathBuf,
        args: Vec<String>,
        env: HashMap<String, String>,
    ) -> Self {
        let log = log_dir().join(format!("{name}.log"));
        Self {
            name: name.to_owned(),
            program,
            args,
            env,
            cwd: None,
            log,
            child: None,
        }
    }

    /// Runs the process in `dir` (nisshi resolves `sqlite://` paths against it).
    pub fn with_cwd(mut self, dir: PathBuf) -> Self {
        self.cwd = Some(dir);
        self
    }

    /// The environment of the next [`Process::start`]: a test may change a
    /// setting and restart the process with it.
    pub fn env_mut(&mut self) -> &mut HashMap<String, String> {
        &mut self.env
    }

    pub fn env(&self) -> &HashMap<String, String> {
        &self.env
    }

    pub fn start(&mut self) {
        assert!(self.child.is_none(), "{} already running", self.name);
        let log = File::options()
            .create(true)
            .append(true)
            .open(&self.log)
            .expect("log file");
        let mut command = Command::new(&self.program);
        if let Some(dir) = &self.cwd {
            command.current_dir(dir);
        }
        let child = command
            .args(&self.args)
            .envs(&self.env)
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log handle"))
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}", self.name));
        self.child = Some(child);
    }

    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// SIGKILL: a crash, with no chance to drain.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// SIGTERM, then waits for a clean exit (SIGKILL after `grace`).
    pub fn terminate(&mut self, grace: Duration) -> Option<std::process::ExitStatus> {
        self.stop_with("TERM", grace)
    }

    /// Sends `signal` (a `kill` name: TERM, INT, ...), then waits for the exit
    /// (SIGKILL after `grace`). `None` when it had to be killed.
    pub fn stop_with(&mut self, signal: &str, grace: Duration) -> Option<std::process::ExitStatus> {
        self.signal(signal);
        self.wait_exit(grace)
    }

    /// Sends `signal` (a `kill` name) and returns at once.
    pub fn signal(&self, signal: &str) {
        if let Some(child) = &self.child {
            let _ = Command::new("kill")
                .args([&format!("-{signal}"), &child.id().to_string()])
                .status();
        }
    }

    /// Waits for the process to exit (SIGKILL after `grace`). `None` when it
    /// had to be killed, or was not running.
    pub fn wait_exit(&mut self, grace: Duration) -> Option<std::process::ExitStatus> {
        let mut child = self.child.take()?;
        let deadline = std::time::Instant::now() + grace;
        loop {
            if let Ok(Some(status)) = child.try_wait() {
                return Some(status);
            }
            if std::time::Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                return None;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn is_running(&mut self) -> bool {
        self.child
            .as_mut()
            .is_some_and(|c| matches!(c.try_wait(), Ok(None)))
    }

    pub fn log_tail(&self, lines: usize) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let all: Vec<&str> = text.lines().collect();
        all[all.len().saturating_sub(lines)..].join("\n")
    }

    pub fn log_path(&self) -> &Path {
        &self.log
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A port nobody listens on right now, and never handed out before in this
/// test process. The port is released before the service binds it, so two
/// stacks starting side by side could otherwise be given the same one, and a
/// test would then talk to the other stack's process (every service answers
/// `/readyz`), which fails in confusing ways.
pub fn free_port() -> u16 {
    static HANDED_OUT: std::sync::Mutex<Vec<u16>> = std::sync::Mutex::new(Vec::new());
    loop {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map(|a| a.port())
            .expect("free port");
        let mut handed_out = HANDED_OUT.lock().unwrap_or_else(|e| e.into_inner());
        if !handed_out.contains(&port) {
            handed_out.push(port);
            return port;
        }
    }
}
