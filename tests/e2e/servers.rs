//! Real HTTP servers on 127.0.0.1 for the cascade tests: the real tier (the
//! `serve` app with large plugins), and a raw server that misbehaves on purpose.

#![allow(dead_code)]

use crate::support::*;
use edgecascade::serve::AppState;
use edgecascade::{CascadeConfig, Metrics, Router};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

/// News text that mixes topics, so the small model is not sure of it.
pub const AMBIGUOUS: &str = "The minister met company bosses to discuss a new digital tax on film studios";

/// Retries quick enough for tests: two attempts, short backoff.
pub fn fast_policy() -> edgecascade::cloud::RetryPolicy {
    edgecascade::cloud::RetryPolicy {
        attempts: 2,
        base_delay: Duration::from_millis(10),
        max_delay: Duration::from_millis(1500),
        ..Default::default()
    }
}

/// Starts the real HTTP app for `state` on a free port; returns its base URL (`…/v1`).
pub fn start_app(state: AppState) -> String {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
        rt.block_on(async move {
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            tx.send(listener.local_addr().unwrap()).unwrap();
            edgecascade::serve::run(listener, state, std::future::pending()).await.unwrap();
        });
    });
    let addr: SocketAddr = rx.recv().unwrap();
    format!("http://{addr}/v1")
}

/// The cloud tier: `news-topic-large` and `sentiment-large` behind the real server.
pub struct Tier {
    pub url: String,
    pub metrics: Metrics,
}

pub fn tier() -> &'static Tier {
    static TIER: OnceLock<Tier> = OnceLock::new();
    TIER.get_or_init(|| {
        let metrics = Metrics::default();
        let routers = ["news-topic-large", "sentiment-large"]
            .map(|name| {
                let p = loaded(name);
                let config = CascadeConfig::for_plugin(&p);
                Router::new(p, None, config, metrics.clone())
            })
            .into_iter()
            .collect();
        let url = start_app(AppState::new(routers, metrics.clone()));
        Tier { url, metrics }
    })
}

/// How a [`FakeCloud`] answers.
#[derive(Clone, Debug)]
pub enum Behaviour {
    /// A well-formed chat completion whose content is this text.
    Reply(String),
    /// Read the request, then say nothing for this long.
    Hang(Duration),
    /// This status, with an optional Retry-After in seconds.
    Status(u16, Option<u32>),
    /// 200 with a JSON content type and this (broken) body.
    Garbage(String),
    /// Headers, then the body one byte at a time with this pause.
    Drip(Duration),
    /// A redirect to itself.
    Redirect,
    /// 200 with a body larger than any client should read.
    Huge(usize),
    /// 200 with the wrong content type.
    WrongType,
    /// 200 with invalid UTF-8.
    BadUtf8,
    /// These exact bytes as the whole response, then close.
    Raw(Vec<u8>),
    /// Headers promising a body, then nothing for this long.
    HeadersThenHang(Duration),
    /// 200, chunked, and chunks without end (until the client hangs up).
    EndlessChunked,
    /// Headers and half the body, then a TCP reset.
    ResetMidBody,
    /// The API's own error shape: this status and this error name (Bedrock's
    /// `ThrottlingException` in `x-amzn-ErrorType`, Anthropic's `overloaded_error`
    /// in `error.type`, OpenAI's `error.type`).
    ApiError(u16, &'static str),
}

/// Which API a [`FakeCloud`] imitates: the shape of its replies and errors.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Shape {
    OpenAi,
    Anthropic,
    Bedrock,
}

impl Shape {
    /// A successful reply whose text is `content`.
    pub fn reply(self, content: &str) -> String {
        let body = match self {
            Shape::OpenAi => return completion(content),
            Shape::Anthropic => serde_json::json!({
                "id": "msg_1", "type": "message", "role": "assistant", "model": "m",
                "content": [{"type": "text", "text": content}], "stop_reason": "end_turn",
                "usage": {"input_tokens": 12, "output_tokens": 1}
            }),
            Shape::Bedrock => serde_json::json!({
                "output": {"message": {"role": "assistant", "content": [{"text": content}]}},
                "stopReason": "end_turn", "usage": {"inputTokens": 12, "outputTokens": 1, "totalTokens": 13}
            }),
        };
        body.to_string()
    }

    /// Extra headers and the body of the API's own error `name`.
    fn error(self, name: &str) -> (String, String) {
        match self {
            Shape::OpenAi => (
                String::new(),
                serde_json::json!({"error": {"message": "failed", "type": name, "code": name}}).to_string(),
            ),
            Shape::Anthropic => (
                String::new(),
                serde_json::json!({"type": "error", "error": {"type": name, "message": "failed"}}).to_string(),
            ),
            Shape::Bedrock => (
                format!("x-amzn-ErrorType: {name}:http://internal.amazon.com/coral/com.amazon.bedrock/\r\n"),
                serde_json::json!({"message": "failed"}).to_string(),
            ),
        }
    }
}

/// A raw HTTP/1.1 server on 127.0.0.1 that records requests and answers as told.
pub struct FakeCloud {
    pub url: String,
    pub addr: SocketAddr,
    behaviour: Arc<Mutex<Behaviour>>,
    pub requests: Arc<Mutex<Vec<String>>>,
    pub hits: Arc<AtomicUsize>,
}

impl FakeCloud {
    /// An OpenAI-compatible server.
    pub fn start(behaviour: Behaviour) -> FakeCloud {
        FakeCloud::start_shaped(Shape::OpenAi, behaviour)
    }

    /// A server that speaks `shape` when it answers well (and in [`Behaviour::ApiError`]).
    pub fn start_shaped(shape: Shape, behaviour: Behaviour) -> FakeCloud {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let behaviour = Arc::new(Mutex::new(behaviour));
        let requests = Arc::new(Mutex::new(Vec::new()));
        let hits = Arc::new(AtomicUsize::new(0));
        let (b, r, h) = (behaviour.clone(), requests.clone(), hits.clone());
        std::thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                let (b, r, h) = (b.clone(), r.clone(), h.clone());
                std::thread::spawn(move || {
                    let _ = serve_one(stream, shape, &b, &r, &h, addr);
                });
            }
        });
        FakeCloud { url: format!("http://{addr}/v1"), addr, behaviour, requests, hits }
    }

    pub fn set(&self, behaviour: Behaviour) {
        *self.behaviour.lock().unwrap() = behaviour;
    }

    pub fn hits(&self) -> usize {
        self.hits.load(Ordering::SeqCst)
    }
}

/// A chat-completions reply with `content`.
pub fn completion(content: &str) -> String {
    serde_json::json!({
        "id": "x", "object": "chat.completion", "created": 0, "model": "m",
        "choices": [{"index": 0, "message": {"role": "assistant", "content": content}, "finish_reason": "stop"}],
        "usage": {"prompt_tokens": 12, "completion_tokens": 1, "total_tokens": 13}
    })
    .to_string()
}

fn serve_one(
    mut stream: TcpStream,
    shape: Shape,
    behaviour: &Mutex<Behaviour>,
    requests: &Mutex<Vec<String>>,
    hits: &AtomicUsize,
    addr: SocketAddr,
) -> std::io::Result<()> {
    let mut reader = BufReader::new(stream.try_clone()?);
    let mut length = 0usize;
    let mut head = String::new();
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line)? == 0 {
            return Ok(());
        }
        if let Some(v) = line.to_ascii_lowercase().strip_prefix("content-length:") {
            length = v.trim().parse().unwrap_or(0);
        }
        head.push_str(&line);
        if line == "\r\n" {
            break;
        }
    }
    let mut body = vec![0u8; length];
    reader.read_exact(&mut body)?;
    hits.fetch_add(1, Ordering::SeqCst);
    requests.lock().unwrap().push(format!("{head}{}", String::from_utf8_lossy(&body)));
    let respond =
        |stream: &mut TcpStream, status: &str, extra: &str, ctype: &str, body: &[u8]| -> std::io::Result<()> {
            write!(
                stream,
                "HTTP/1.1 {status}\r\ncontent-type: {ctype}\r\ncontent-length: {}\r\nconnection: close\r\n{extra}\r\n",
                body.len()
            )?;
            stream.write_all(body)
        };
    let behaviour = behaviour.lock().unwrap().clone();
    match behaviour {
        Behaviour::Reply(content) => {
            respond(&mut stream, "200 OK", "", "application/json", shape.reply(&content).as_bytes())
        }
        Behaviour::Hang(d) => {
            std::thread::sleep(d);
            Ok(())
        }
        Behaviour::Status(code, retry) => {
            let extra = retry.map(|s| format!("retry-after: {s}\r\n")).unwrap_or_default();
            respond(
                &mut stream,
                &format!("{code} Oops"),
                &extra,
                "application/json",
                b"{\"error\":{\"message\":\"no\"}}",
            )
        }
        Behaviour::Garbage(text) => respond(&mut stream, "200 OK", "", "application/json", text.as_bytes()),
        Behaviour::Drip(pause) => {
            let body = shape.reply("business");
            write!(
                stream,
                "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n",
                body.len()
            )?;
            for byte in body.as_bytes() {
                stream.write_all(&[*byte])?;
                stream.flush()?;
                std::thread::sleep(pause);
            }
            Ok(())
        }
        Behaviour::Redirect => respond(
            &mut stream,
            "307 Temporary Redirect",
            &format!("location: http://{addr}/v1/chat/completions\r\n"),
            "text/plain",
            b"",
        ),
        Behaviour::Huge(n) => {
            let mut body = completion("business").into_bytes();
            body.truncate(body.len() - 1);
            body.extend(std::iter::repeat_n(b' ', n));
            body.push(b'}');
            respond(&mut stream, "200 OK", "", "application/json", &body)
        }
        Behaviour::WrongType => respond(&mut stream, "200 OK", "", "text/html", b"<html>login</html>"),
        Behaviour::BadUtf8 => respond(&mut stream, "200 OK", "", "application/json", &[b'{', 0xff, 0xfe, b'}']),
        Behaviour::Raw(bytes) => stream.write_all(&bytes),
        Behaviour::HeadersThenHang(d) => {
            write!(stream, "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 400\r\n\r\n")?;
            stream.flush()?;
            std::thread::sleep(d);
            Ok(())
        }
        Behaviour::EndlessChunked => {
            write!(stream, "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ntransfer-encoding: chunked\r\n\r\n")?;
            write!(stream, "1\r\n[\r\n")?;
            let chunk = format!("{:x}\r\n{}\r\n", 4096, " ".repeat(4096));
            loop {
                stream.write_all(chunk.as_bytes())?;
            }
        }
        Behaviour::ResetMidBody => {
            let body = shape.reply("business");
            write!(
                stream,
                "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{}",
                body.len(),
                &body[..body.len() / 2]
            )?;
            stream.flush()?;
            std::thread::sleep(Duration::from_millis(50));
            // SO_LINGER 0: closing sends a RST, not a FIN.
            socket2::SockRef::from(&stream).set_linger(Some(Duration::ZERO))?;
            drop(stream);
            Ok(())
        }
        Behaviour::ApiError(status, name) => {
            let (extra, body) = shape.error(name);
            respond(&mut stream, &format!("{status} Error"), &extra, "application/json", body.as_bytes())
        }
    }
}

/// A port with nothing listening on it.
pub fn refused_url() -> String {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap();
    drop(l);
    format!("http://{addr}/v1")
}

/// A running `edgecascade serve` process on a free port; SIGTERM when stopped or dropped.
pub struct ServeProcess {
    child: std::process::Child,
    /// `http://ADDR`, without `/v1`.
    pub base: String,
}

impl ServeProcess {
    /// Starts `edgecascade serve --listen 127.0.0.1:0` with `args`, and waits until it listens.
    pub fn start<S: AsRef<std::ffi::OsStr>>(args: impl IntoIterator<Item = S>) -> ServeProcess {
        ServeProcess::start_with_env(args, &[])
    }

    /// [`ServeProcess::start`] with these environment variables set.
    pub fn start_with_env<S: AsRef<std::ffi::OsStr>>(
        args: impl IntoIterator<Item = S>,
        env: &[(&str, String)],
    ) -> ServeProcess {
        let mut child = std::process::Command::new(bin())
            .args(["serve", "--listen", "127.0.0.1:0"])
            .args(args)
            .env("EDGECASCADE_CACHE_DIR", cache_dir())
            .envs(env.iter().map(|(k, v)| (k, v)))
            .stdout(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let mut first = String::new();
        BufReader::new(child.stdout.take().unwrap()).read_line(&mut first).unwrap();
        let base = first.trim().strip_prefix("listening on ").unwrap_or_else(|| panic!("{first:?}")).to_string();
        ServeProcess { child, base }
    }

    /// SIGTERM, then the exit status.
    pub fn stop(mut self) -> std::process::ExitStatus {
        let status = std::process::Command::new("kill").args(["-TERM", &self.child.id().to_string()]).status();
        assert!(status.unwrap().success());
        self.child.wait().unwrap()
    }
}

impl Drop for ServeProcess {
    fn drop(&mut self) {
        // A test that failed before `stop` must not leave the server running.
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `openssl s_server` on 127.0.0.1 with a certificate for 127.0.0.1 signed by a
/// fresh self-signed CA. In `-rev` mode it answers whatever it is sent with the
/// lines reversed: a real TLS handshake, then a reply that is not HTTP.
pub struct TlsServer {
    pub addr: String,
    /// The CA's certificate, PEM.
    pub ca_pem: String,
    child: std::process::Child,
    _dir: tempfile::TempDir,
}

impl TlsServer {
    /// A server whose certificate is for IP 127.0.0.1 and valid for two days.
    pub fn start() -> TlsServer {
        TlsServer::start_with("IP:127.0.0.1", "2")
    }

    /// A server whose leaf certificate names `subject_alt_name` (an openssl
    /// SAN, such as `DNS:example.invalid`) and is valid for `days` from now
    /// (`-1`: it expired a day ago).
    pub fn start_with(subject_alt_name: &str, days: &str) -> TlsServer {
        use std::process::{Command, Stdio};
        let dir = tempfile::tempdir().unwrap();
        let openssl = |args: &[&str]| {
            let out = Command::new("openssl").args(args).current_dir(dir.path()).output();
            let out = out.expect("the openssl CLI is needed for the TLS tests (Debian: apt install openssl)");
            assert!(out.status.success(), "openssl {args:?}: {}", String::from_utf8_lossy(&out.stderr));
        };
        let ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes"];
        openssl(
            &[
                &["req", "-x509"],
                &ec[..],
                &["-keyout", "ca.key", "-out", "ca.pem", "-days", "2", "-subj", "/CN=edgecascade test CA"],
            ]
            .concat(),
        );
        openssl(&[&["req"], &ec[..], &["-keyout", "key.pem", "-out", "leaf.csr", "-subj", "/CN=127.0.0.1"]].concat());
        // A leaf, not a CA: rustls refuses a CA certificate used as a server's own.
        let ext = format!(
            "subjectAltName={subject_alt_name}\nbasicConstraints=critical,CA:FALSE\nextendedKeyUsage=serverAuth\n"
        );
        std::fs::write(dir.path().join("leaf.ext"), ext).unwrap();
        openssl(&[
            "x509",
            "-req",
            "-in",
            "leaf.csr",
            "-CA",
            "ca.pem",
            "-CAkey",
            "ca.key",
            "-set_serial",
            "1",
            "-days",
            days,
            "-extfile",
            "leaf.ext",
            "-out",
            "cert.pem",
        ]);
        let mut child = Command::new("openssl")
            .args(["s_server", "-accept", "127.0.0.1:0", "-cert", "cert.pem", "-key", "key.pem", "-rev"])
            .current_dir(dir.path())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let mut stdout = BufReader::new(child.stdout.take().unwrap());
        let addr = loop {
            let mut line = String::new();
            assert!(stdout.read_line(&mut line).unwrap() > 0, "openssl s_server exited before listening");
            if let Some(addr) = line.trim().strip_prefix("ACCEPT ") {
                break addr.to_string();
            }
        };
        // s_server logs every connection; a full pipe would stall it.
        std::thread::spawn(move || std::io::copy(&mut stdout, &mut std::io::sink()));
        let ca_pem = std::fs::read_to_string(dir.path().join("ca.pem")).unwrap();
        TlsServer { addr, ca_pem, child, _dir: dir }
    }
}

impl Drop for TlsServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
