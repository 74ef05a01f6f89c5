//! Test harness: a stalkd server in-process on 127.0.0.1:0 with a manual
//! clock, and a raw-bytes client that asserts exact replies.
#![allow(dead_code)]

use stalkd::clock::Clock;
use stalkd::config::{Config, Listen};
use stalkd::engine::HostInfo;
use stalkd::hub::Hub;
use stalkd::server::{LocalAddr, Server};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// How long a reply may take before a test fails (generous: no test waits
/// this long when it passes).
pub const REPLY_TIMEOUT: Duration = Duration::from_secs(5);

/// How long a test watches for a reply that must not come.
pub const SILENCE: Duration = Duration::from_millis(100);

pub struct TestServer {
    pub addr: SocketAddr,
    pub hub: Arc<Hub>,
    clock: Clock,
}

impl TestServer {
    /// A server with default settings on 127.0.0.1:0.
    pub async fn start() -> TestServer {
        TestServer::start_with(Config::default()).await
    }

    /// A server with `config`, listening on 127.0.0.1:0 whatever it says.
    pub async fn start_with(mut config: Config) -> TestServer {
        config.listen = Listen::Tcp {
            host: "127.0.0.1".into(),
            port: 0,
        };
        let clock = Clock::manual();
        let server = Server::bind(&config, clock.clone(), HostInfo::fixed())
            .await
            .expect("bind test server");
        let LocalAddr::Tcp(addr) = server.local_addr().unwrap() else {
            unreachable!()
        };
        let hub = server.hub();
        tokio::spawn(server.run(std::future::pending()));
        TestServer { addr, hub, clock }
    }

    pub async fn client(&self) -> Client {
        let stream = TcpStream::connect(self.addr).await.expect("connect");
        stream.set_nodelay(true).unwrap();
        Client { stream }
    }

    /// Moves the server's clock forward and runs every timer now due.
    pub fn advance(&self, by: Duration) {
        self.clock.advance(by);
        self.hub.tick();
        self.hub.with_engine(|e| e.check_invariants());
    }

    pub fn advance_secs(&self, secs: u64) {
        self.advance(Duration::from_secs(secs));
    }

    pub fn check_invariants(&self) {
        self.hub.with_engine(|e| e.check_invariants());
    }
}

pub struct Client {
    pub stream: TcpStream,
}

impl Client {
    pub async fn send(&mut self, bytes: impl AsRef<[u8]>) {
        self.stream.write_all(bytes.as_ref()).await.expect("send");
    }

    /// Reads exactly `expected.len()` bytes and asserts they are `expected`.
    pub async fn expect(&mut self, expected: impl AsRef<[u8]>) {
        let expected = expected.as_ref();
        let mut got = vec![0u8; expected.len()];
        let mut filled = 0;
        while filled < got.len() {
            let n = tokio::time::timeout(REPLY_TIMEOUT, self.stream.read(&mut got[filled..]))
                .await
                .unwrap_or_else(|_| {
                    panic!(
                        "timed out waiting for {:?}; got so far {:?}",
                        String::from_utf8_lossy(expected),
                        String::from_utf8_lossy(&got[..filled])
                    )
                })
                .expect("read");
            assert!(
                n > 0,
                "connection closed; expected {:?}, got {:?}",
                String::from_utf8_lossy(expected),
                String::from_utf8_lossy(&got[..filled])
            );
            filled += n;
        }
        assert_eq!(
            String::from_utf8_lossy(&got),
            String::from_utf8_lossy(expected),
            "reply bytes differ"
        );
    }

    /// Sends `request` and asserts the reply is exactly `reply`.
    pub async fn roundtrip(&mut self, request: impl AsRef<[u8]>, reply: impl AsRef<[u8]>) {
        self.send(request).await;
        self.expect(reply).await;
    }

    /// Asserts nothing arrives for a short while.
    pub async fn expect_silence(&mut self) {
        let mut buf = [0u8; 256];
        match tokio::time::timeout(SILENCE, self.stream.read(&mut buf)).await {
            Err(_) => {}
            Ok(Ok(0)) => panic!("connection closed while expecting silence"),
            Ok(Ok(n)) => panic!("unexpected bytes: {:?}", String::from_utf8_lossy(&buf[..n])),
            Ok(Err(e)) => panic!("read error: {e}"),
        }
    }

    /// Asserts the server closes the connection without sending anything more.
    pub async fn expect_closed(&mut self) {
        let mut buf = [0u8; 256];
        match tokio::time::timeout(REPLY_TIMEOUT, self.stream.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => {}
            Ok(Ok(n)) => panic!("unexpected bytes: {:?}", String::from_utf8_lossy(&buf[..n])),
            Err(_) => panic!("connection not closed"),
        }
    }

    /// Sends a command whose reply is `OK <n>\r\n<yaml>\r\n` and returns the YAML.
    pub async fn yaml(&mut self, request: impl AsRef<[u8]>) -> String {
        self.send(request).await;
        let mut header = Vec::new();
        while !header.ends_with(b"\r\n") {
            let mut b = [0u8; 1];
            let n = tokio::time::timeout(REPLY_TIMEOUT, self.stream.read(&mut b))
                .await
                .expect("timed out reading OK header")
                .expect("read");
            assert!(n == 1, "closed while reading OK header");
            header.push(b[0]);
        }
        let header = String::from_utf8(header).unwrap();
        let len: usize = header
            .strip_prefix("OK ")
            .and_then(|s| s.strip_suffix("\r\n"))
            .unwrap_or_else(|| panic!("expected OK <n>, got {header:?}"))
            .parse()
            .unwrap();
        let mut body = vec![0u8; len + 2];
        tokio::time::timeout(REPLY_TIMEOUT, self.stream.read_exact(&mut body))
            .await
            .expect("timed out reading OK body")
            .expect("read");
        assert!(body.ends_with(b"\r\n"), "OK body must end with CRLF");
        body.truncate(len);
        String::from_utf8(body).unwrap()
    }

    /// One field of a stats YAML body.
    pub async fn stat(&mut self, request: impl AsRef<[u8]>, key: &str) -> String {
        let yaml = self.yaml(request).await;
        field(&yaml, key)
    }
}

/// The value of `key` in a `key: value` YAML body.
pub fn field(yaml: &str, key: &str) -> String {
    yaml.lines()
        .find_map(|l| l.strip_prefix(key).and_then(|r| r.strip_prefix(": ")))
        .unwrap_or_else(|| panic!("no {key} in {yaml}"))
        .to_string()
}
