//! Starts the real `ringlog` binary and talks Kafka to it over a plain TCP socket.

#![allow(dead_code)]

pub mod kafka;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use bytes::{Buf, BufMut, Bytes, BytesMut};
use kafka_protocol::messages::{ApiKey, RequestHeader, ResponseHeader};
use kafka_protocol::protocol::{Decodable, Encodable, StrBytes};

pub const IO_TIMEOUT: Duration = Duration::from_secs(30);

pub struct Broker {
    child: Option<Child>,
    pub port: u16,
    pub dir: PathBuf,
    pub log: PathBuf,
    overrides: Vec<String>,
    starts: usize,
}

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

pub fn scratch_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!(
        "ringlog-it-{name}-{}-{}",
        std::process::id(),
        free_port()
    ));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// Set to `buffered` or `direct` to run every broker of the tests in that write mode.
pub const WRITE_MODE_ENV: &str = "RINGLOG_TEST_WRITE_MODE";

impl Broker {
    pub fn start(name: &str, overrides: &[&str]) -> Broker {
        Broker::start_on(name, free_port(), overrides)
    }

    /// As `start`, with the client port given (a cluster's nodes name each other's).
    pub fn start_on(name: &str, port: u16, overrides: &[&str]) -> Broker {
        let dir = scratch_dir(name);
        let mut b = Broker {
            child: None,
            port,
            log: dir.join("broker.log"),
            dir,
            overrides: overrides.iter().map(|s| s.to_string()).collect(),
            starts: 0,
        };
        b.spawn();
        b
    }

    pub fn data_dir(&self) -> PathBuf {
        self.dir.join("data")
    }

    fn spawn(&mut self) {
        self.starts += 1;
        let marker = format!("==== start #{}\n", self.starts);
        let mut log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .unwrap();
        log.write_all(marker.as_bytes()).unwrap();
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_ringlog"));
        cmd.arg("serve")
            .arg("--override")
            .arg(format!("listeners=PLAINTEXT://127.0.0.1:{}", self.port))
            .arg("--override")
            .arg(format!("log.dirs={}", self.data_dir().display()));
        // The storage tests run once per write mode (see scripts/test.sh).
        if let Ok(mode) = std::env::var(WRITE_MODE_ENV) {
            cmd.arg("--override")
                .arg(format!("ringlog.log.write.mode={mode}"));
        }
        for o in &self.overrides {
            cmd.arg("--override").arg(o);
        }
        let child = cmd
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .stdin(Stdio::null())
            .spawn()
            .unwrap();
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let text = std::fs::read_to_string(&self.log).unwrap_or_default();
            if text[text.rfind(&marker).unwrap_or(0)..].contains("ringlog is serving") {
                return;
            }
            if let Some(status) = self.child.as_mut().unwrap().try_wait().unwrap() {
                panic!("ringlog exited with {status}:\n{text}");
            }
            assert!(Instant::now() < deadline, "ringlog did not start:\n{text}");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Sends `signal` and waits for the process to exit; returns its exit code.
    pub fn stop(&mut self, signal: i32) -> Option<i32> {
        let mut child = self.child.take()?;
        // SAFETY: sending a signal to our own child process.
        unsafe { libc::kill(child.id() as i32, signal) };
        let status = child.wait().unwrap();
        status.code()
    }

    pub fn restart(&mut self, signal: i32) -> Option<i32> {
        let code = self.stop(signal);
        self.spawn();
        code
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// The broker's process id, while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    pub fn connect(&self) -> Client {
        let stream = TcpStream::connect(("127.0.0.1", self.port)).unwrap();
        stream.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
        stream.set_nodelay(true).unwrap();
        Client::new(stream)
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        let code = self.stop(libc::SIGTERM);
        let log = self.log_text();
        if !std::thread::panicking() {
            assert!(
                !log.contains("panicked"),
                "the broker logged a panic:\n{log}"
            );
            assert_eq!(
                code,
                Some(0),
                "SIGTERM did not stop the broker cleanly:\n{log}"
            );
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}

pub struct Client {
    pub stream: TcpStream,
    next_correlation_id: i32,
}

impl Client {
    pub fn new(stream: TcpStream) -> Client {
        Client {
            stream,
            next_correlation_id: 1,
        }
    }

    /// Encodes and sends a request; returns its correlation id.
    pub fn send<R: Encodable>(&mut self, api: ApiKey, version: i16, body: &R) -> i32 {
        let correlation_id = self.next_correlation_id;
        self.next_correlation_id += 1;
        let mut header = RequestHeader::default();
        header.request_api_key = api as i16;
        header.request_api_version = version;
        header.correlation_id = correlation_id;
        header.client_id = Some(StrBytes::from_static_str("ringlog-it"));
        let mut buf = BytesMut::new();
        buf.put_i32(0);
        header
            .encode(&mut buf, api.request_header_version(version))
            .unwrap();
        body.encode(&mut buf, version).unwrap();
        let size = (buf.len() - 4) as i32;
        buf[..4].copy_from_slice(&size.to_be_bytes());
        self.stream.write_all(&buf).unwrap();
        correlation_id
    }

    pub fn send_raw(&mut self, bytes: &[u8]) {
        self.stream.write_all(bytes).unwrap();
    }

    pub fn recv_frame(&mut self) -> std::io::Result<Bytes> {
        let mut size = [0u8; 4];
        self.stream.read_exact(&mut size)?;
        let mut frame = vec![0u8; i32::from_be_bytes(size) as usize];
        self.stream.read_exact(&mut frame)?;
        Ok(Bytes::from(frame))
    }

    /// Reads one response and returns (correlation id, body).
    pub fn recv<R: Decodable>(&mut self, api: ApiKey, version: i16) -> (i32, R) {
        let mut frame = self.recv_frame().expect("a response");
        let header =
            ResponseHeader::decode(&mut frame, api.response_header_version(version)).unwrap();
        let body = R::decode(&mut frame, version).unwrap();
        assert!(!frame.has_remaining(), "trailing bytes in the response");
        (header.correlation_id, body)
    }

    pub fn call<Req: Encodable, Resp: Decodable>(
        &mut self,
        api: ApiKey,
        version: i16,
        body: &Req,
    ) -> Resp {
        let id = self.send(api, version, body);
        let (got, resp) = self.recv(api, version);
        assert_eq!(got, id, "correlation id");
        resp
    }

    /// True if the broker closed this connection (EOF or reset) within the timeout.
    pub fn is_closed_by_peer(&mut self) -> bool {
        let mut buf = [0u8; 1];
        match self.stream.read(&mut buf) {
            Ok(0) => true,
            Ok(_) => false,
            Err(e) => !matches!(
                e.kind(),
                std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
            ),
        }
    }
}
