//! A tiny HTTP/1.1 server on 127.0.0.1 for the download tests, written on std only.
//!
//! Routes:
//! - `/ok/<anything>`: 200 with a small PNG;
//! - `/junk/<anything>`: 200 with bytes that are not an image;
//! - `/missing/<anything>`: 404;
//! - `/slow/<anything>`: waits 1.5 s, then 200 (past the tests' 300 ms timeout);
//! - `/loop/a` and `/loop/b`: redirect to each other forever;
//! - `/once/<anything>`: redirects to `/ok/<anything>`;
//! - `/flaky/<anything>`: 503 on the first request of each path, 200 after.
//!
//! Every request is counted, so tests can assert that a cached run made none.

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// A running test server.
pub struct Server {
    /// `http://127.0.0.1:<port>`.
    pub base: String,
    hits: Arc<Mutex<HashMap<String, usize>>>,
}

impl Server {
    /// Starts a server on a free port; it lives until the test process ends.
    pub fn start() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1");
        let base = format!("http://{}", listener.local_addr().unwrap());
        let hits: Arc<Mutex<HashMap<String, usize>>> = Arc::default();
        let hits2 = hits.clone();
        std::thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                let hits = hits2.clone();
                std::thread::spawn(move || {
                    let _ = handle(stream, &hits);
                });
            }
        });
        Server { base, hits }
    }

    /// The URL of `path` (which starts with `/`).
    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// Requests received so far, over all paths.
    pub fn total_hits(&self) -> usize {
        self.hits.lock().unwrap().values().sum()
    }

    /// Requests received so far for `path`.
    pub fn hits(&self, path: &str) -> usize {
        self.hits.lock().unwrap().get(path).copied().unwrap_or(0)
    }
}

/// A 4x3 PNG whose colour depends on `seed`.
pub fn png_bytes(seed: u8) -> Vec<u8> {
    let img = image::RgbImage::from_fn(4, 3, |x, y| image::Rgb([seed, x as u8 * 40, y as u8 * 60]));
    let mut bytes = Vec::new();
    img.write_to(
        &mut std::io::Cursor::new(&mut bytes),
        image::ImageFormat::Png,
    )
    .unwrap();
    bytes
}

fn handle(stream: TcpStream, hits: &Mutex<HashMap<String, usize>>) -> std::io::Result<()> {
    let mut reader = BufReader::new(stream.try_clone()?);
    let mut request_line = String::new();
    reader.read_line(&mut request_line)?;
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line)? == 0 || line == "\r\n" || line == "\n" {
            break;
        }
    }
    let path = request_line
        .split_whitespace()
        .nth(1)
        .unwrap_or("/")
        .to_string();
    let count = {
        let mut hits = hits.lock().unwrap();
        let n = hits.entry(path.clone()).or_default();
        *n += 1;
        *n
    };
    let mut stream = stream;
    let respond = |stream: &mut TcpStream, status: &str, headers: &str, body: &[u8]| {
        let head = format!(
            "HTTP/1.1 {status}\r\nContent-Length: {}\r\nConnection: close\r\n{headers}\r\n",
            body.len()
        );
        stream.write_all(head.as_bytes())?;
        stream.write_all(body)?;
        stream.flush()
    };
    let png = png_bytes(path.len() as u8);
    if path.starts_with("/ok/") {
        respond(&mut stream, "200 OK", "Content-Type: image/png\r\n", &png)
    } else if path.starts_with("/junk/") {
        respond(&mut stream, "200 OK", "", b"<html>not an image</html>")
    } else if path.starts_with("/missing/") {
        respond(&mut stream, "404 Not Found", "", b"not found")
    } else if path.starts_with("/slow/") {
        std::thread::sleep(Duration::from_millis(1500));
        respond(&mut stream, "200 OK", "", &png)
    } else if path == "/loop/a" {
        respond(&mut stream, "302 Found", "Location: /loop/b\r\n", b"")
    } else if path == "/loop/b" {
        respond(&mut stream, "302 Found", "Location: /loop/a\r\n", b"")
    } else if let Some(rest) = path.strip_prefix("/once/") {
        let location = format!("Location: /ok/{rest}\r\n");
        respond(&mut stream, "302 Found", &location, b"")
    } else if path.starts_with("/flaky/") {
        if count == 1 {
            respond(&mut stream, "503 Service Unavailable", "", b"busy")
        } else {
            respond(&mut stream, "200 OK", "", &png)
        }
    } else {
        respond(&mut stream, "404 Not Found", "", b"")
    }
}

/// A fetcher for tests: its cache in `cache`, short timeouts, no retries, no proxy from the
/// environment, no progress bar, so a failure costs milliseconds.
pub fn quick_fetcher(cache: &std::path::Path) -> phi3v_data::images::ImageFetcher {
    phi3v_data::images::ImageFetcher::new(phi3v_data::images::FetchConfig {
        cache_dir: cache.to_path_buf(),
        timeout: Duration::from_millis(300),
        connect_timeout: Duration::from_millis(300),
        retries: 0,
        proxy_from_env: false,
        progress: false,
        ..phi3v_data::images::FetchConfig::default()
    })
    .unwrap()
}
