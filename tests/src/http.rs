//! Harness for the HTTP front's end-to-end tests: a real `codejail-http` process on an
//! ephemeral loopback port ([`TestFront`]), and a minimal HTTP/1.1 client written for
//! the tests ([`HttpResponse`], [`TestFront::send`]): the tests must send exactly the
//! bytes edx-platform's `requests` sends, and also what no well-behaved client would
//! (malformed bodies, a disconnect mid-run), which a full client library hides.
//!
//! The front gets its configuration from a file written here (`listen =
//! "127.0.0.1:0"`, the broker's socket, and whatever the test adds) and prints the
//! address it bound; [`TestFront::start`] reads it from its log.

use std::fs::{self, File};
use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use codejail_client::pyjson::{self, Value};

use crate::bin;

/// How long the front may take to start listening.
pub const FRONT_START_TIMEOUT: Duration = Duration::from_secs(20);
/// How long the front may take to pass its safety checks against a fresh broker.
pub const READY_TIMEOUT: Duration = Duration::from_secs(30);
/// The longest a test waits for one HTTP answer.
pub const HTTP_TIMEOUT: Duration = Duration::from_secs(60);

/// A `codejail-http` process; stopped (SIGTERM, then SIGKILL) on drop.
#[derive(Debug)]
pub struct TestFront {
    child: Child,
    exit: Option<ExitStatus>,
    addr: SocketAddr,
    log: PathBuf,
    _dir: tempfile::TempDir,
}

impl TestFront {
    /// Start a front for the broker at `socket`, with `extra` appended to its config
    /// file (TOML keys of `codejail_http::Config`). Panics with its log if it does not
    /// listen within [`FRONT_START_TIMEOUT`].
    pub fn start(socket: &Path, extra: &str) -> TestFront {
        Self::start_with_nofile(socket, extra, None)
    }

    /// [`TestFront::start`], with the front's `RLIMIT_NOFILE` set to `(soft, hard)`
    /// when given (else it inherits the test's).
    pub fn start_with_nofile(socket: &Path, extra: &str, nofile: Option<(u64, u64)>) -> TestFront {
        let dir = tempfile::Builder::new()
            .prefix("codejail-http-test-")
            .tempdir()
            .expect("create the front's temp dir");
        let config = dir.path().join("http.toml");
        fs::write(&config, config_text(socket, extra)).expect("write the front's config");
        let log = dir.path().join("http.log");
        let log_file = File::create(&log).expect("create the front's log");
        let child = front_command(&config, nofile)
            .stdin(Stdio::null())
            .stdout(log_file.try_clone().expect("dup the log"))
            .stderr(log_file)
            .spawn()
            .expect("spawn codejail-http");
        let mut front = TestFront {
            child,
            exit: None,
            addr: SocketAddr::from(([127, 0, 0, 1], 0)),
            log,
            _dir: dir,
        };
        front.addr = front.wait_listening();
        front
    }

    /// Start a front and wait until `/health/` answers 200 (the safety checks passed);
    /// panics with both logs otherwise.
    pub fn start_ready(socket: &Path, extra: &str) -> TestFront {
        let front = Self::start(socket, extra);
        if !front.wait_health(200, READY_TIMEOUT) {
            panic!(
                "codejail-http did not become ready within {READY_TIMEOUT:?} (its safety \
                 checks must pass against this broker); its log:\n{}",
                front.log()
            );
        }
        front
    }

    fn wait_listening(&mut self) -> SocketAddr {
        let deadline = Instant::now() + FRONT_START_TIMEOUT;
        loop {
            if let Some(status) = self.child.try_wait().expect("try_wait front") {
                self.exit = Some(status);
                panic!(
                    "codejail-http exited during start-up ({status}):\n{}",
                    self.log()
                );
            }
            if let Some(addr) = listening_addr(&self.log()) {
                return addr;
            }
            if Instant::now() > deadline {
                panic!("codejail-http did not listen in time:\n{}", self.log());
            }
            std::thread::sleep(Duration::from_millis(25));
        }
    }

    /// Poll `/health/` until it answers `status`, for at most `timeout`.
    pub fn wait_health(&self, status: u16, timeout: Duration) -> bool {
        crate::wait_until(timeout, || {
            self.try_get("/health/").is_ok_and(|r| r.status == status)
        })
    }

    /// The address it listens on.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Its process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Everything it logged so far.
    pub fn log(&self) -> String {
        fs::read(&self.log)
            .map(|b| String::from_utf8_lossy(&b).into_owned())
            .unwrap_or_else(|e| format!("<cannot read the log: {e}>"))
    }

    /// Send raw request bytes on a new connection and read the answer.
    pub fn send(&self, request: &[u8]) -> io::Result<HttpResponse> {
        self.send_within(request, HTTP_TIMEOUT)
    }

    /// [`TestFront::send`], giving up (an error) when no byte came for `timeout`.
    pub fn send_within(&self, request: &[u8], timeout: Duration) -> io::Result<HttpResponse> {
        let mut s = TcpStream::connect(self.addr)?;
        s.set_read_timeout(Some(timeout))?;
        s.write_all(request)?;
        let mut raw = Vec::new();
        s.read_to_end(&mut raw)?;
        HttpResponse::parse(&raw)
    }

    /// `GET path`.
    pub fn try_get(&self, path: &str) -> io::Result<HttpResponse> {
        self.try_get_within(path, HTTP_TIMEOUT)
    }

    /// `GET path`, giving up when no byte came for `timeout`.
    pub fn try_get_within(&self, path: &str, timeout: Duration) -> io::Result<HttpResponse> {
        self.send_within(
            format!("GET {path} HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n").as_bytes(),
            timeout,
        )
    }

    /// A connection that sent half a header block (no blank line) and stalls.
    pub fn stall(&self) -> TcpStream {
        let mut s = TcpStream::connect(self.addr).expect("connect to the front");
        s.write_all(b"GET /live HTTP/1.1\r\nHost: t\r\n")
            .expect("send half a header block");
        s
    }

    /// The value of a metric without labels in `/metrics`, if present.
    pub fn metric(&self, name: &str) -> Option<f64> {
        let m = self.get("/metrics");
        String::from_utf8_lossy(&m.body)
            .lines()
            .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok())
    }

    /// `GET path`; panics on a transport error.
    pub fn get(&self, path: &str) -> HttpResponse {
        self.try_get(path)
            .unwrap_or_else(|e| panic!("GET {path}: {e}; front log:\n{}", self.log()))
    }

    /// A request with this method, content type and body, as raw bytes.
    pub fn request_bytes(
        method: &str,
        path: &str,
        content_type: Option<&str>,
        body: &[u8],
    ) -> Vec<u8> {
        let mut head = format!("{method} {path} HTTP/1.1\r\nHost: t\r\nConnection: close\r\n");
        if let Some(ct) = content_type {
            head.push_str(&format!("Content-Type: {ct}\r\n"));
        }
        head.push_str(&format!("Content-Length: {}\r\n\r\n", body.len()));
        let mut out = head.into_bytes();
        out.extend_from_slice(body);
        out
    }

    /// A POST with this content type and body; panics on a transport error.
    pub fn post(&self, path: &str, content_type: Option<&str>, body: &[u8]) -> HttpResponse {
        self.send(&Self::request_bytes("POST", path, content_type, body))
            .unwrap_or_else(|e| panic!("POST {path}: {e}; front log:\n{}", self.log()))
    }

    /// `POST /api/v0/code-exec` urlencoded with these fields, as `requests.post(url,
    /// data={...})` sends it.
    pub fn post_form(&self, fields: &[(&str, &str)]) -> HttpResponse {
        self.post(
            "/api/v0/code-exec",
            Some("application/x-www-form-urlencoded"),
            urlencode(fields).as_bytes(),
        )
    }

    /// `POST /api/v0/code-exec` with `payload` only, urlencoded (edx-platform without files).
    pub fn code_exec(&self, payload: &str) -> HttpResponse {
        self.post_form(&[("payload", payload)])
    }

    /// `POST /api/v0/code-exec` as multipart form data, as `requests.post(url,
    /// data={"payload": ...}, files=[(name, bytes)])` sends it: each file a part named
    /// and file-named by its name.
    pub fn code_exec_multipart(&self, payload: &str, files: &[(&str, &[u8])]) -> HttpResponse {
        let (ct, body) = multipart(payload, files);
        self.post("/api/v0/code-exec", Some(&ct), &body)
    }

    /// Send SIGTERM and wait for the exit (SIGKILL after `grace`).
    pub fn terminate_within(&mut self, grace: Duration) -> ExitStatus {
        if let Some(status) = self.exit {
            return status;
        }
        let pid = nix::unistd::Pid::from_raw(self.child.id() as i32);
        let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
        self.wait_within(grace)
    }

    /// Wait for the exit (SIGKILL after `grace`).
    pub fn wait_within(&mut self, grace: Duration) -> ExitStatus {
        if let Some(status) = self.exit {
            return status;
        }
        let deadline = Instant::now() + grace;
        let status = loop {
            if let Some(status) = self.child.try_wait().expect("try_wait front") {
                break status;
            }
            if Instant::now() > deadline {
                let _ = self.child.kill();
                break self.child.wait().expect("wait front");
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        self.exit = Some(status);
        status
    }
}

impl Drop for TestFront {
    fn drop(&mut self) {
        self.terminate_within(Duration::from_secs(10));
    }
}

/// The front's config file text: loopback on an ephemeral port, this broker, a quick
/// health poll, then `extra`.
pub fn config_text(socket: &Path, extra: &str) -> String {
    format!(
        "listen = \"127.0.0.1:0\"\nbroker_socket = {:?}\nhealth_interval_secs = 0.2\n{extra}\n",
        socket.to_str().expect("a UTF-8 socket path")
    )
}

/// `codejail-http --config CONFIG`, logging at info without colours, its
/// `RLIMIT_NOFILE` set to `(soft, hard)` when given.
pub fn front_command(config: &Path, nofile: Option<(u64, u64)>) -> Command {
    let mut cmd = Command::new(bin("codejail-http"));
    cmd.arg("--config")
        .arg(config)
        .env("RUST_LOG", "info")
        .env("NO_COLOR", "1");
    if let Some((soft, hard)) = nofile {
        // SAFETY: the closure runs in the forked child before exec and only calls
        // setrlimit(2), which is async-signal-safe and allocates nothing.
        unsafe {
            cmd.pre_exec(move || {
                let lim = libc::rlimit {
                    rlim_cur: soft,
                    rlim_max: hard,
                };
                if libc::setrlimit(libc::RLIMIT_NOFILE, &lim) != 0 {
                    return Err(io::Error::last_os_error());
                }
                Ok(())
            });
        }
    }
    cmd
}

/// Raise this test process's soft `RLIMIT_NOFILE` to its hard limit (for tests that
/// hold many connections) and return it.
pub fn raise_open_files_limit() -> u64 {
    let (_, hard) = nix::sys::resource::getrlimit(nix::sys::resource::Resource::RLIMIT_NOFILE)
        .expect("getrlimit");
    nix::sys::resource::setrlimit(nix::sys::resource::Resource::RLIMIT_NOFILE, hard, hard)
        .expect("raise the soft RLIMIT_NOFILE to the hard one");
    hard
}

/// Whether the peer closed `s` (EOF or reset) within `within`; false if it is still
/// open then.
pub fn closed_within(s: &mut TcpStream, within: Duration) -> bool {
    let deadline = Instant::now() + within;
    let mut buf = [0u8; 4096];
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() || s.set_read_timeout(Some(left)).is_err() {
            return false;
        }
        match s.read(&mut buf) {
            Ok(0) => return true,
            // An answer (there should be none) is read past, to the close.
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::ConnectionReset => return true,
            Err(_) => return false,
        }
    }
}

/// The address in the front's `codejail-http listening listen=ADDR` line.
fn listening_addr(log: &str) -> Option<SocketAddr> {
    log.lines()
        .find(|l| l.contains("codejail-http listening"))
        .and_then(|l| l.split("listen=").nth(1))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|a| a.parse().ok())
}

/// `application/x-www-form-urlencoded` of these fields (what `requests` writes).
pub fn urlencode(fields: &[(&str, &str)]) -> String {
    fields
        .iter()
        .map(|(k, v)| format!("{}={}", pct(k), pct(v)))
        .collect::<Vec<_>>()
        .join("&")
}

fn pct(s: &str) -> String {
    let mut out = String::new();
    for b in s.bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => {
                out.push(char::from(b))
            }
            b' ' => out.push('+'),
            _ => out.push_str(&format!("%{b:02X}")),
        }
    }
    out
}

/// The content type and body of a multipart form with `payload` and these files.
pub fn multipart(payload: &str, files: &[(&str, &[u8])]) -> (String, Vec<u8>) {
    let mut parts = vec![("payload", None, payload.as_bytes())];
    parts.extend(
        files
            .iter()
            .map(|(name, contents)| (*name, Some(*name), *contents)),
    );
    multipart_parts(&parts)
}

/// The content type and body of a multipart form of these `(name, file name if a
/// file, contents)` parts, in this order, as `requests` writes them.
pub fn multipart_parts(parts: &[(&str, Option<&str>, &[u8])]) -> (String, Vec<u8>) {
    let boundary = "e3b0c44298fc1c149afbf4c8996fb924";
    let mut body = Vec::new();
    for (name, file, contents) in parts {
        body.extend_from_slice(
            format!("--{boundary}\r\nContent-Disposition: form-data; name=\"{name}\"").as_bytes(),
        );
        if let Some(file) = file {
            body.extend_from_slice(format!("; filename=\"{file}\"").as_bytes());
        }
        body.extend_from_slice(b"\r\n\r\n");
        body.extend_from_slice(contents);
        body.extend_from_slice(b"\r\n");
    }
    body.extend_from_slice(format!("--{boundary}--\r\n").as_bytes());
    (format!("multipart/form-data; boundary={boundary}"), body)
}

/// One HTTP answer.
#[derive(Debug, Clone)]
pub struct HttpResponse {
    /// The status code.
    pub status: u16,
    /// Headers, names lowercased, in order.
    pub headers: Vec<(String, String)>,
    /// The body.
    pub body: Vec<u8>,
}

impl HttpResponse {
    /// Parse a whole `Connection: close` answer (Content-Length or to the end).
    pub fn parse(raw: &[u8]) -> io::Result<HttpResponse> {
        let bad = |what: &str| io::Error::new(io::ErrorKind::InvalidData, what.to_string());
        let end = raw
            .windows(4)
            .position(|w| w == b"\r\n\r\n")
            .ok_or_else(|| bad("no end of headers"))?;
        let head = std::str::from_utf8(&raw[..end]).map_err(|_| bad("non-UTF-8 head"))?;
        let mut lines = head.split("\r\n");
        let status_line = lines.next().ok_or_else(|| bad("no status line"))?;
        let status = status_line
            .split(' ')
            .nth(1)
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| bad("bad status line"))?;
        let headers: Vec<(String, String)> = lines
            .filter_map(|l| l.split_once(':'))
            .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
            .collect();
        let mut body = raw[end + 4..].to_vec();
        if let Some(len) = headers
            .iter()
            .find(|(k, _)| k == "content-length")
            .and_then(|(_, v)| v.parse::<usize>().ok())
        {
            body.truncate(len);
        }
        Ok(HttpResponse {
            status,
            headers,
            body,
        })
    }

    /// The value of a header, if present.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k == &name.to_ascii_lowercase())
            .map(|(_, v)| v.as_str())
    }

    /// The body as Python-dialect JSON; panics if it is not, or if the content type is
    /// not exactly `application/json`.
    pub fn json(&self) -> Value {
        assert_eq!(
            self.header("content-type"),
            Some("application/json"),
            "content type of {self:?}"
        );
        let text = String::from_utf8_lossy(&self.body);
        pyjson::from_str(&text).unwrap_or_else(|e| panic!("not JSON ({e}): {text}"))
    }

    /// `body[key]` as a string; panics if absent.
    pub fn json_str(&self, key: &str) -> String {
        let v = self.json();
        v.as_dict()
            .and_then(|d| d.get(key))
            .and_then(Value::as_str)
            .map(str::to_string)
            .unwrap_or_else(|| panic!("no string {key:?} in {v}"))
    }

    /// Assert the status and `{key: message}` exactly (a one-key JSON body).
    pub fn assert_refusal(&self, status: u16, key: &str, message: &str) {
        assert_eq!(self.status, status, "{self:?}");
        let v = self.json();
        let d = v.as_dict().unwrap_or_else(|| panic!("not an object: {v}"));
        assert_eq!(d.len(), 1, "one key only: {v}");
        assert_eq!(self.json_str(key), message, "{v}");
    }
}

/// A zip archive of these `(name, contents)` files, made by the sandbox interpreter's
/// `zipfile` (what a course's `python_lib.zip` is).
pub fn zip_of(files: &[(&str, &str)]) -> Vec<u8> {
    let dir = tempfile::tempdir().expect("temp dir");
    let out = dir.path().join("python_lib.zip");
    let mut script = format!(
        "import zipfile\nz = zipfile.ZipFile({:?}, 'w')\n",
        out.to_str().expect("UTF-8")
    );
    for (name, contents) in files {
        script.push_str(&format!("z.writestr({name:?}, {contents:?})\n"));
    }
    script.push_str("z.close()\n");
    let status = Command::new(crate::python())
        .args(["-E", "-B", "-c", &script])
        .status()
        .expect("run python");
    assert!(status.success(), "zipfile failed");
    fs::read(out).expect("read the zip")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_answers_and_encodes_forms() {
        let r = HttpResponse::parse(
            b"HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/json\r\nRetry-After: 1\r\ncontent-length: 2\r\n\r\n{}junk",
        )
        .expect("parses");
        assert_eq!(r.status, 503);
        assert_eq!(r.header("retry-after"), Some("1"));
        assert_eq!(r.body, b"{}");
        assert_eq!(
            urlencode(&[("payload", "{\"a\": 1}")]),
            "payload=%7B%22a%22%3A+1%7D"
        );
        assert_eq!(
            listening_addr("x INFO codejail-http listening listen=127.0.0.1:4321 broker=/s"),
            Some("127.0.0.1:4321".parse().expect("addr"))
        );
    }
}
