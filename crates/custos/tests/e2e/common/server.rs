//! A running Custos on ephemeral loopback ports: in-process by default
//! (`custos::serve::start` on listeners bound to port 0, its own runtime), or
//! the real binary for tests that need a process (SIGKILL, SIGTERM, its
//! memory, its stderr).

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Write};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

use super::{BIN, DataDir};

static SERVERS: AtomicU32 = AtomicU32::new(0);

pub struct Server {
    child: Option<Child>,
    in_process: Option<InProcess>,
    /// The plain DICOM listener.
    pub addr: SocketAddr,
    /// The HTTPS (or plain HTTP) listener.
    pub http: SocketAddr,
    /// The DICOM TLS listener, when on.
    pub tls: Option<SocketAddr>,
    pub log: PathBuf,
    /// The data folder's CA certificate (clients trust it for HTTPS).
    pub ca: PathBuf,
}

struct InProcess {
    runtime: tokio::runtime::Runtime,
    running: Option<custos::serve::Running>,
}

/// Listen on port 0 everywhere unless a test says otherwise.
const LISTEN_ANYWHERE: [(&str, &str); 3] = [
    ("CUSTOS_DICOM_LISTEN", "127.0.0.1:0"),
    ("CUSTOS_HTTP_LISTEN", "127.0.0.1:0"),
    ("CUSTOS_DICOM_TLS_LISTEN", "127.0.0.1:0"),
];

impl Server {
    pub fn start(data: &DataDir) -> Server {
        Self::start_with(data, &[])
    }

    /// An in-process server with `env` as its `CUSTOS_*` overrides (the
    /// test process's own environment is not consulted).
    pub fn start_with(data: &DataDir, env: &[(&str, &str)]) -> Server {
        let n = SERVERS.fetch_add(1, Ordering::SeqCst);
        let name = format!("custos-server-{n}");
        let log = data.path.with_extension(format!("log{n}"));
        std::fs::File::create(&log).expect("log file");
        route_logs(&name, log.clone());
        let vars: HashMap<String, String> = LISTEN_ANYWHERE
            .iter()
            .chain(env)
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let config = custos::config::Config::load_with(&data.path, |k| vars.get(k).cloned())
            .expect("configuration");
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name(name)
            .enable_all()
            .build()
            .expect("runtime");
        let data_dir = data.path.clone();
        // Started on the runtime's own threads, so that its log lines carry
        // the server's thread name.
        let (listeners, running) = runtime
            .block_on(async move {
                tokio::spawn(async move {
                    let listeners = custos::serve::Listeners::bind(&config).await?;
                    let addrs = (
                        listeners
                            .dicom
                            .as_ref()
                            .map(|l| l.local_addr())
                            .transpose()?,
                        listeners
                            .dicom_tls
                            .as_ref()
                            .map(|l| l.local_addr())
                            .transpose()?,
                        listeners.http.local_addr()?,
                    );
                    let running = custos::serve::start(&data_dir, config, listeners).await?;
                    anyhow::Ok((addrs, running))
                })
                .await
            })
            .expect("server task")
            .unwrap_or_else(|e| panic!("server did not start: {e:#}"));
        let (dicom, tls, http) = listeners;
        Server {
            child: None,
            in_process: Some(InProcess {
                runtime,
                running: Some(running),
            }),
            addr: dicom.unwrap_or_else(|| "0.0.0.0:0".parse().unwrap()),
            http,
            tls,
            log,
            ca: data.path.join("tls").join("ca.pem"),
        }
    }

    /// `custos serve` as a process.
    pub fn process(data: &DataDir) -> Server {
        Self::process_with(data, &[])
    }

    pub fn process_with(data: &DataDir, env: &[(&str, &str)]) -> Server {
        let n = SERVERS.fetch_add(1, Ordering::SeqCst);
        let log = data.path.with_extension(format!("log{n}"));
        let mut cmd = Command::new(BIN);
        cmd.arg("serve")
            .arg("--data")
            .arg(&data.path)
            .env("RUST_LOG", "info")
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(&log).expect("log file"));
        for (k, v) in LISTEN_ANYWHERE.iter().chain(env) {
            cmd.env(k, v);
        }
        let mut child = cmd.spawn().expect("start custos serve");
        let stdout = child.stdout.take().expect("stdout");
        let mut lines = BufReader::new(stdout).lines();
        let deadline = Instant::now() + Duration::from_secs(30);
        let (mut addr, mut http, mut tls) = (None, None, None);
        // The DICOM lines come first; the HTTP(S) line ends the start-up.
        while http.is_none() {
            assert!(Instant::now() < deadline, "server did not start");
            let line = lines
                .next()
                .expect("server exited before listening")
                .expect("read stdout");
            let parse = |rest: &str| rest.split_whitespace().next().unwrap().parse().unwrap();
            if let Some(rest) = line.strip_prefix("Custos listening for DICOM on ") {
                addr = Some(parse(rest));
            }
            if let Some(rest) = line.strip_prefix("Custos listening for DICOM TLS on ") {
                tls = Some(parse(rest));
            }
            for prefix in [
                "Custos listening for HTTPS on ",
                "Custos listening for HTTP on ",
            ] {
                if let Some(rest) = line.strip_prefix(prefix) {
                    http = Some(parse(rest));
                }
            }
        }
        // Keep draining stdout so the server never blocks on a full pipe.
        std::thread::spawn(move || for _ in lines {});
        Server {
            child: Some(child),
            in_process: None,
            addr: addr.unwrap_or_else(|| "0.0.0.0:0".parse().unwrap()),
            http: http.unwrap(),
            tls,
            log,
            ca: data.path.join("tls").join("ca.pem"),
        }
    }

    pub fn port(&self) -> String {
        self.addr.port().to_string()
    }

    /// The server process's id (process servers only).
    pub fn pid(&self) -> u32 {
        self.child
            .as_ref()
            .expect("an in-process server has no pid: start it with Server::process")
            .id()
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Stops the server the way an operator does (SIGTERM for a process);
    /// returns whether it stopped cleanly.
    pub fn stop(mut self) -> bool {
        if let Some(mut p) = self.in_process.take() {
            let running = p.running.take().expect("running");
            let stopped = p.runtime.block_on(running.stop());
            if let Err(e) = &stopped {
                eprintln!("stop failed: {e:#}");
            }
            return stopped.is_ok();
        }
        let child = self.child.as_mut().expect("a server");
        let _ = Command::new("kill")
            .arg("-TERM")
            .arg(child.id().to_string())
            .status();
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Ok(Some(st)) = child.try_wait() {
                return st.success();
            }
            assert!(Instant::now() < deadline, "server did not stop");
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// SIGKILL (process servers only).
    pub fn kill9(mut self) {
        let child = self
            .child
            .as_mut()
            .expect("only a process can be killed: start it with Server::process");
        let _ = child.kill();
        let _ = child.wait();
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        if let Some(p) = self.in_process.take() {
            // Like a kill: tasks are dropped where they are.
            drop(p.running);
            p.runtime.shutdown_background();
        }
    }
}

/// Log files of in-process servers by the name of their runtime's threads.
fn log_files() -> &'static Mutex<HashMap<String, PathBuf>> {
    static FILES: OnceLock<Mutex<HashMap<String, PathBuf>>> = OnceLock::new();
    FILES.get_or_init(Default::default)
}

/// Sends the log lines of threads named `thread` to `file`, and installs
/// (once) the subscriber that does so at info level.
fn route_logs(thread: &str, file: PathBuf) {
    log_files().lock().unwrap().insert(thread.to_string(), file);
    static INSTALLED: OnceLock<()> = OnceLock::new();
    INSTALLED.get_or_init(|| {
        let _ = tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::new("info"))
            .with_writer(ThreadLog)
            .with_ansi(false)
            .try_init();
    });
}

/// Writes a log line to the file of the server whose thread logs it.
struct ThreadLog;

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for ThreadLog {
    type Writer = Box<dyn Write>;
    fn make_writer(&'a self) -> Self::Writer {
        let name = std::thread::current().name().map(str::to_string);
        let file = name.and_then(|n| log_files().lock().unwrap().get(&n).cloned());
        match file.and_then(|f| std::fs::OpenOptions::new().append(true).open(f).ok()) {
            Some(f) => Box::new(f),
            None => Box::new(std::io::sink()),
        }
    }
}
