//! Telling an HTTP/1.1 server from a gRPC one, after a call's connection broke.
//!
//! A gRPC client pointed at an HTTP/1.1 port (DTM's HTTP port, 36789, instead of its gRPC
//! port, 36790) sends the HTTP/2 preface, gets `HTTP/1.1 404 Not Found` back, and tonic
//! reports whatever the broken connection looked like at that moment: "transport error",
//! "operation was canceled", "h2 protocol error". None of it says what happened, so after
//! such a failure the client opens one more connection and looks at the first bytes the
//! server answers.

use std::time::Duration;

use dtmcli::Error;
use tokio::net::TcpStream;

/// The HTTP/2 client preface and an empty SETTINGS frame: how every HTTP/2 client starts.
const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\x00\x00\x00\x04\x00\x00\x00\x00\x00";

/// The longest the probe may take: a live HTTP/1.1 server answers at once.
const MAX_PROBE: Duration = Duration::from_secs(3);

/// True when the server at `addr` (`host:port`) answers an HTTP/2 connection's start as an
/// HTTP/1.1 server does (`HTTP/1.1 400 Bad Request`, Go's `404 Not Found`...). False on any
/// other answer, any error, or after `timeout` (at most 3 s).
pub(crate) async fn speaks_http1(addr: &str, timeout: Duration) -> bool {
    let probe = async {
        let stream = TcpStream::connect(addr).await.ok()?;
        let mut sent = 0;
        while sent < PREFACE.len() {
            stream.writable().await.ok()?;
            match stream.try_write(&PREFACE[sent..]) {
                Ok(n) => sent += n,
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
                Err(_) => return None,
            }
        }
        let mut head = [0u8; 8];
        let mut read = 0;
        while read < head.len() {
            stream.readable().await.ok()?;
            match stream.try_read(&mut head[read..]) {
                Ok(0) => break,
                Ok(n) => read += n,
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
                Err(_) => break,
            }
        }
        Some(head[..read].starts_with(b"HTTP/1."))
    };
    matches!(
        tokio::time::timeout(timeout.min(MAX_PROBE), probe).await,
        Ok(Some(true))
    )
}

/// `err`, the error of a call to `addr` whose connection broke before any answer, saying
/// that the peer is an HTTP/1.1 server when it is one (`dtm`: the peer was meant to be DTM's
/// gRPC API, else a gRPC branch). Other errors come back unchanged.
pub(crate) async fn explain_broken(err: Error, addr: &str, dtm: bool, timeout: Duration) -> Error {
    let Error::Grpc {
        url: target,
        code,
        answered: false,
        ..
    } = &err
    else {
        return err;
    };
    if !speaks_http1(addr, timeout).await {
        return err;
    }
    let hint = if dtm {
        "is this DTM's HTTP port (36789 by default)? DTM's gRPC port is 36790 by default"
    } else {
        "a gRPC branch URL names a gRPC server (host:port/package.Service/Method); an HTTP branch is written http://host:port/path"
    };
    Error::grpc_no_answer(
        target.clone(),
        *code,
        format!("it answered like an HTTP/1.1 server, not gRPC: {hint}"),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A one-shot server on 127.0.0.1 that answers every connection `answer` and closes it.
    async fn serve(answer: &'static [u8]) -> String {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        tokio::spawn(async move {
            while let Ok((s, _)) = listener.accept().await {
                let _ = s.writable().await;
                let _ = s.try_write(answer);
            }
        });
        addr
    }

    #[tokio::test]
    async fn tells_http1_from_other_peers() {
        let t = Duration::from_secs(2);
        let http1 = serve(b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n").await;
        assert!(speaks_http1(&http1, t).await);
        // An HTTP/2 server starts with its SETTINGS frame.
        let h2 = serve(b"\x00\x00\x00\x04\x00\x00\x00\x00\x00").await;
        assert!(!speaks_http1(&h2, t).await);
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        assert!(!speaks_http1(&format!("127.0.0.1:{port}"), t).await);

        let broken = Error::grpc_no_answer("x/dtmgimp.Dtm/NewGid", 2, "the connection broke");
        let e = explain_broken(broken, &http1, true, t).await;
        let text = crate::status::grpc_error_text(&e, Some(2), false);
        assert!(
            text.contains("answered like an HTTP/1.1 server, not gRPC"),
            "{text}"
        );
        assert!(text.contains("DTM's gRPC port is 36790"), "{text}");
        // A status the peer answered is left alone.
        let answered = Error::grpc("x", 2, "boom");
        let e = explain_broken(answered, &http1, true, t).await;
        assert_eq!(e.to_string(), "x answered gRPC status 2: boom");
    }
}
