//! The kubelet stand-in of booted nodes (no kubelet binary can be had here). The test
//! asset mirror serves it as the kubelet, with its sha256; the agent installs it at the
//! kubelet's path and systemd starts it from the rendered unit and drop-in, so it gets
//! exactly what the real kubelet would.
//!
//! It records what it was given in `/var/lib/kubelet-standin/record.json` (argv, the
//! flags, the files they name: the KubeletConfiguration and the kubeconfig, parsed, and
//! the files those name: contents for certificates and CA bundles, only presence for
//! keys), then answers `GET /healthz` with `ok` on 127.0.0.1:10248 as the kubelet does,
//! until SIGTERM, on which it exits 0. Plain std: it runs in the node's Debian 12.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::Path;
use std::process::ExitCode;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use nix::sys::signal::{SigSet, Signal};
use serde_json::{Value, json};

const RECORD_DIR: &str = "/var/lib/kubelet-standin";
const HEALTHZ: &str = "127.0.0.1:10248";

fn main() -> ExitCode {
    // Blocked before any thread starts, so that only the main thread's sigwait sees it.
    let mut term = SigSet::empty();
    term.add(Signal::SIGTERM);
    term.add(Signal::SIGINT);
    if let Err(e) = term.thread_block() {
        eprintln!("kubelet-standin: blocking SIGTERM: {e}");
        return ExitCode::FAILURE;
    }
    let args: Vec<String> = std::env::args().collect();
    let dir = std::env::var("KUBELET_STANDIN_DIR").unwrap_or_else(|_| RECORD_DIR.to_owned());
    let record = record(&args);
    if let Err(e) = write_record(Path::new(&dir), &record) {
        eprintln!("kubelet-standin: writing the record in {dir}: {e}");
        return ExitCode::FAILURE;
    }
    let listener = match TcpListener::bind(HEALTHZ) {
        Ok(listener) => listener,
        Err(e) => {
            eprintln!("kubelet-standin: listening on {HEALTHZ}: {e}");
            return ExitCode::FAILURE;
        }
    };
    println!(
        "kubelet-standin: recorded {} arguments in {dir}/record.json; serving /healthz on {HEALTHZ}",
        args.len().saturating_sub(1)
    );
    std::thread::spawn(move || serve(&listener));
    match term.wait() {
        Ok(signal) => println!("kubelet-standin: {signal}, exiting"),
        Err(e) => eprintln!("kubelet-standin: waiting for a signal: {e}"),
    }
    ExitCode::SUCCESS
}

/// What the kubelet was given: its arguments, and the files they name.
fn record(args: &[String]) -> Value {
    let flags: BTreeMap<String, String> = args
        .iter()
        .skip(1)
        .filter_map(|a| a.split_once('='))
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect();
    let mut files = BTreeMap::new();
    let config = flags.get("--config").map(|path| {
        let parsed = read_yaml(path, &mut files);
        for pointer in [
            "/authentication/x509/clientCAFile",
            "/tlsCertFile",
            "/resolvConf",
        ] {
            if let Some(referenced) = parsed.pointer(pointer).and_then(Value::as_str) {
                read_text(referenced, &mut files);
            }
        }
        parsed
    });
    let kubeconfig = flags.get("--kubeconfig").map(|path| {
        let parsed = read_yaml(path, &mut files);
        for cluster in parsed["clusters"].as_array().into_iter().flatten() {
            if let Some(ca) = cluster["cluster"]["certificate-authority"].as_str() {
                read_text(ca, &mut files);
            }
        }
        for user in parsed["users"].as_array().into_iter().flatten() {
            if let Some(cert) = user["user"]["client-certificate"].as_str() {
                read_text(cert, &mut files);
            }
            if let Some(key) = user["user"]["client-key"].as_str() {
                // A private key is never copied into the record: only whether it is there.
                files.insert(key.to_owned(), presence(key));
            }
        }
        parsed
    });
    // TLS bootstrapping: the kubeconfig it first authenticates with (a token by file).
    let bootstrap_kubeconfig = flags.get("--bootstrap-kubeconfig").map(|path| {
        let parsed = read_yaml(path, &mut files);
        for cluster in parsed["clusters"].as_array().into_iter().flatten() {
            if let Some(ca) = cluster["cluster"]["certificate-authority"].as_str() {
                read_text(ca, &mut files);
            }
        }
        for user in parsed["users"].as_array().into_iter().flatten() {
            if let Some(token) = user["user"]["tokenFile"].as_str() {
                // A token is a secret: only whether it is there.
                files.insert(token.to_owned(), presence(token));
            }
        }
        parsed
    });
    if let Some(path) = flags.get("--image-credential-provider-config") {
        read_yaml(path, &mut files);
    }
    json!({
        "argv": args,
        "flags": flags,
        "config": config,
        "kubeconfig": kubeconfig,
        "bootstrapKubeconfig": bootstrap_kubeconfig,
        "files": files,
        "pid": std::process::id(),
        "bootId": std::fs::read_to_string("/proc/sys/kernel/random/boot_id")
            .map(|s| s.trim().to_owned())
            .unwrap_or_default(),
        "startedAtMs": SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_millis() as u64)
            .unwrap_or(0),
    })
}

/// A YAML file's parsed contents (`null` if missing or not YAML), recorded in `files`.
fn read_yaml(path: &str, files: &mut BTreeMap<String, Value>) -> Value {
    let text = read_text(path, files);
    text.and_then(|t| yaml_serde::from_str::<Value>(&t).ok())
        .unwrap_or(Value::Null)
}

/// A text file's contents, recorded in `files` (or that it is missing).
fn read_text(path: &str, files: &mut BTreeMap<String, Value>) -> Option<String> {
    match std::fs::read_to_string(path) {
        Ok(text) => {
            files.insert(path.to_owned(), json!({"exists": true, "content": text}));
            Some(text)
        }
        Err(e) => {
            files.insert(
                path.to_owned(),
                json!({"exists": false, "error": e.to_string()}),
            );
            None
        }
    }
}

fn presence(path: &str) -> Value {
    match std::fs::metadata(path) {
        Ok(meta) => json!({"exists": true, "bytes": meta.len()}),
        Err(e) => json!({"exists": false, "error": e.to_string()}),
    }
}

/// Writes the record whole or not at all (a reader never sees half of it).
fn write_record(dir: &Path, record: &Value) -> std::io::Result<()> {
    std::fs::create_dir_all(dir)?;
    let tmp = dir.join("record.json.tmp");
    let text = serde_json::to_string_pretty(record).map_err(std::io::Error::other)?;
    std::fs::write(&tmp, text)?;
    std::fs::rename(&tmp, dir.join("record.json"))
}

fn serve(listener: &TcpListener) {
    for stream in listener.incoming().flatten() {
        // One request per connection; a slow client must not hold up the next.
        std::thread::spawn(move || answer(stream));
    }
}

fn answer(mut stream: TcpStream) {
    let _ = stream.set_read_timeout(Some(Duration::from_secs(5)));
    let mut request = Vec::new();
    let mut buffer = [0u8; 1024];
    while !request.windows(4).any(|w| w == b"\r\n\r\n") && request.len() < 16 * 1024 {
        match stream.read(&mut buffer) {
            Ok(0) | Err(_) => break,
            Ok(n) => request.extend_from_slice(&buffer[..n]),
        }
    }
    let line = String::from_utf8_lossy(&request);
    let mut words = line.split_whitespace();
    let (status, body) = match (words.next(), words.next()) {
        (Some("GET"), Some("/healthz")) => ("200 OK", "ok"),
        (Some("GET"), Some(_)) => ("404 Not Found", "404 page not found\n"),
        _ => ("405 Method Not Allowed", "method not allowed\n"),
    };
    let _ = write!(
        stream,
        "HTTP/1.1 {status}\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
}
