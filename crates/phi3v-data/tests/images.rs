//! Image downloads against a local HTTP server: success, 404, timeout, redirect loop, retries,
//! the cache (a second run makes no request), concurrency, and the decoding check.

use crate::common;

use std::path::Path;
use std::time::{Duration, Instant};

use common::{png_bytes, Server};
use phi3v_data::images::{check_decodes, FetchConfig, FetchError, ImageCache, ImageFetcher};

/// Short timeouts and backoff so failures cost milliseconds.
fn config(cache: &Path) -> FetchConfig {
    FetchConfig {
        cache_dir: cache.to_path_buf(),
        timeout: Duration::from_millis(300),
        connect_timeout: Duration::from_millis(300),
        retries: 1,
        backoff: Duration::from_millis(10),
        max_redirects: 3,
        concurrency: 4,
        proxy_from_env: false,
        progress: false,
        ..FetchConfig::default()
    }
}

#[test]
fn downloads_into_the_cache() {
    let server = Server::start();
    let dir = tempfile::tempdir().unwrap();
    let fetcher = ImageFetcher::new(config(dir.path())).unwrap();
    let url = server.url("/ok/a.png");
    let fetched = fetcher.fetch(&url).unwrap();
    assert!(!fetched.from_cache);
    assert_eq!(fetched.path, fetcher.cache().path(&url));
    assert!(fetched.path.starts_with(dir.path()));
    assert_eq!(
        std::fs::read(&fetched.path).unwrap(),
        png_bytes("/ok/a.png".len() as u8)
    );
    assert_eq!(
        check_decodes(&std::fs::read(&fetched.path).unwrap()).unwrap(),
        (4, 3)
    );
    assert_eq!(server.hits("/ok/a.png"), 1);
    let stats = fetcher.stats();
    assert_eq!((stats.requests, stats.downloaded, stats.failed), (1, 1, 0));
}

#[test]
fn not_found_is_not_retried() {
    let server = Server::start();
    let dir = tempfile::tempdir().unwrap();
    let fetcher = ImageFetcher::new(config(dir.path())).unwrap();
    let failure = fetcher.fetch(&server.url("/missing/x.png")).unwrap_err();
    assert_eq!(failure.error, FetchError::Status(404));
    assert_eq!(failure.attempts, 1);
    assert_eq!(server.hits("/missing/x.png"), 1);
    assert!(fetcher.cache().get(&server.url("/missing/x.png")).is_none());
}

#[test]
fn slow_response_times_out_and_is_retried() {
    let server = Server::start();
    let dir = tempfile::tempdir().unwrap();
    let fetcher = ImageFetcher::new(config(dir.path())).unwrap();
    let start = Instant::now();
    let failure = fetcher.fetch(&server.url("/slow/x.png")).unwrap_err();
    let elapsed = start.elapsed();
    assert_eq!(
        failure.error,
        FetchError::Timeout(Duration::from_millis(300))
    );
    assert_eq!(failure.attempts, 2, "one retry");
    // Two attempts of 300 ms and a 10 ms backoff; far below the server's 1.5 s delay.
    assert!(elapsed < Duration::from_millis(1400), "took {elapsed:?}");
    assert!(elapsed >= Duration::from_millis(600), "took {elapsed:?}");
}

#[test]
fn redirect_loop_stops_at_the_limit() {
    let server = Server::start();
    let dir = tempfile::tempdir().unwrap();
    let fetcher = ImageFetcher::new(config(dir.path())).unwrap();
    let failure = fetcher.fetch(&server.url("/loop/a")).unwrap_err();
    assert_eq!(failure.error, FetchError::TooManyRedirects(3));
    assert_eq!(failure.attempts, 1, "a redirect loop is not transient");
    // The first request and three followed redirects.
    assert_eq!(server.hits("/loop/a") + server.hits("/loop/b"), 4);
}

#[test]
fn a_single_redirect_is_followed() {
    let server = Server::start();
    let dir = tempfile::tempdir().unwrap();
    let fetcher = ImageFetcher::new(config(dir.path())).unwrap();
    let fetched = fetcher.fetch(&server.url("/once/r.png")).unwrap();
    assert_eq!(
        check_decodes(&std::fs::read(fetched.path).unwrap()).unwrap(),
        (4, 3)
    );
    assert_eq!(server.hits("/once/r.png"), 1);
    assert_eq!(server.hits("/ok/r.png"), 1);
}

#[test]
fn transient_error_is_retried_with_backoff() {
    let server = Server::start();
    let dir = tempfile::tempdir().unwrap();
    let fetcher = ImageFetcher::new(FetchConfig {
        backoff: Duration::from_millis(100),
        ..config(dir.path())
    })
    .unwrap();
    let start = Instant::now();
    let fetched = fetcher.fetch(&server.url("/flaky/f.png")).unwrap();
    assert!(!fetched.from_cache);
    assert_eq!(server.hits("/flaky/f.png"), 2, "503, then 200");
    assert!(
        start.elapsed() >= Duration::from_millis(100),
        "waited the backoff"
    );
    assert_eq!(fetcher.stats().requests, 2);
}

#[test]
fn second_run_is_served_from_the_cache() {
    let server = Server::start();
    let dir = tempfile::tempdir().unwrap();
    let urls: Vec<String> = (0..6)
        .map(|i| server.url(&format!("/ok/{i}.png")))
        .collect();

    let first = ImageFetcher::new(config(dir.path())).unwrap();
    let results = first.fetch_many(&urls);
    assert!(results.iter().all(|r| matches!(r, Ok(f) if !f.from_cache)));
    let hits_after_first = server.total_hits();
    assert_eq!(hits_after_first, 6);

    // A new fetcher (a new run) over the same cache folder.
    let second = ImageFetcher::new(config(dir.path())).unwrap();
    let again = second.fetch_many(&urls);
    assert_eq!(
        server.total_hits(),
        hits_after_first,
        "no request on the second run"
    );
    for (a, b) in results.iter().zip(&again) {
        let (a, b) = (a.as_ref().unwrap(), b.as_ref().unwrap());
        assert!(b.from_cache);
        assert_eq!(a.path, b.path);
    }
    let stats = second.stats();
    assert_eq!((stats.requests, stats.cache_hits), (0, 6));

    // Atomic writes leave no temporary files behind.
    let leftovers: Vec<_> = walk(dir.path())
        .into_iter()
        .filter(|p| p.extension().is_some_and(|e| e == "tmp"))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
    assert_eq!(walk(dir.path()).len(), 6);
}

#[test]
fn fetch_many_keeps_order_and_fetches_duplicates_once() {
    let server = Server::start();
    let dir = tempfile::tempdir().unwrap();
    let fetcher = ImageFetcher::new(config(dir.path())).unwrap();
    let urls = vec![
        server.url("/ok/1.png"),
        server.url("/missing/2.png"),
        server.url("/ok/1.png"),
        server.url("/ok/3.png"),
        server.url("/loop/a"),
    ];
    let results = fetcher.fetch_many(&urls);
    assert_eq!(results.len(), 5);
    assert!(results[0].is_ok() && results[2].is_ok() && results[3].is_ok());
    assert_eq!(results[0], results[2]);
    assert_eq!(
        results[1].as_ref().unwrap_err().error,
        FetchError::Status(404)
    );
    assert_eq!(
        results[4].as_ref().unwrap_err().error,
        FetchError::TooManyRedirects(3)
    );
    assert_eq!(server.hits("/ok/1.png"), 1);
}

#[test]
fn closed_port_is_a_connection_failure() {
    let dir = tempfile::tempdir().unwrap();
    let fetcher = ImageFetcher::new(FetchConfig {
        retries: 2,
        ..config(dir.path())
    })
    .unwrap();
    let failure = fetcher.fetch("http://127.0.0.1:1/x.png").unwrap_err();
    assert!(
        matches!(failure.error, FetchError::Connection(_)),
        "{failure}"
    );
    assert_eq!(failure.attempts, 3);
}

#[test]
fn https_goes_through_rustls() {
    // A server that answers a TLS ClientHello with plain HTTP: the handshake fails, which
    // proves https URLs reach the built-in TLS stack (rustls, no system OpenSSL), and TLS
    // failures are not retried.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            use std::io::{Read, Write};
            let mut stream = stream;
            let mut buf = [0u8; 512];
            let _ = stream.read(&mut buf);
            let _ = stream.write_all(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n");
        }
    });
    let dir = tempfile::tempdir().unwrap();
    let fetcher = ImageFetcher::new(config(dir.path())).unwrap();
    let failure = fetcher
        .fetch(&format!("https://127.0.0.1:{port}/x.png"))
        .unwrap_err();
    assert!(matches!(failure.error, FetchError::Tls(_)), "{failure:?}");
    assert_eq!(failure.attempts, 1);
}

#[test]
fn cache_keys_are_stable_and_distinct() {
    let key = ImageCache::key("https://example.com/a.jpg");
    assert_eq!(key.len(), 64);
    assert_eq!(key, ImageCache::key("https://example.com/a.jpg"));
    assert_ne!(key, ImageCache::key("https://example.com/b.jpg"));
    // SHA-256 of the URL text, independent of this crate's version.
    assert_eq!(
        ImageCache::key("abc"),
        "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
    );
}

#[test]
fn decoding_check_rejects_junk_and_truncation() {
    assert!(check_decodes(b"<html>not an image</html>").is_err());
    let png = png_bytes(9);
    assert!(check_decodes(&png).is_ok());
    assert!(
        check_decodes(&png[..png.len() - 20]).is_err(),
        "truncated PNG"
    );
}

fn walk(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            files.extend(walk(&path));
        } else {
            files.push(path);
        }
    }
    files
}
