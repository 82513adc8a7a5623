//! DTM's HTTP API beside its gRPC one. DTM answers `query` over HTTP only, and a gRPC
//! client reads a transaction's stored state through it: what an answer means
//! (`dtmcli::outcome`), `wait_final`, and the check of a workflow resume.
//!
//! With the `http` feature the API is reached through a `dtmcli::DtmClient` (reqwest: TLS,
//! the client's bounds). Without it, in a gRPC-only build that builds no reqwest, it is one
//! plain HTTP/1.1 GET over hyper, which tonic already brings: `http://` only, bounded by
//! the client's timeouts and answer cap like every other call.

use dtmcli::{Limits, QueryResult, Result};

/// The HTTP API of one DTM server, for reads.
#[derive(Clone)]
pub(crate) struct HttpApi {
    #[cfg(feature = "http")]
    client: dtmcli::DtmClient,
    #[cfg(not(feature = "http"))]
    plain: plain::Plain,
}

impl HttpApi {
    /// The API at `url` (`http://host:36789/api/dtmsvr`), read within `limits`.
    #[cfg(feature = "http")]
    pub(crate) fn new(url: &str, limits: &Limits, http: &reqwest::Client) -> Result<Self> {
        let client = dtmcli::DtmClient::builder(url)
            .http_client(http.clone())
            .limits(*limits)
            .build()?;
        Ok(HttpApi { client })
    }

    /// The API at `url` (`http://host:36789/api/dtmsvr`), read within `limits`.
    #[cfg(not(feature = "http"))]
    pub(crate) fn new(url: &str, limits: &Limits) -> Result<Self> {
        Ok(HttpApi {
            plain: plain::Plain::new(url, *limits)?,
        })
    }

    /// The API's URL (credentials redacted).
    pub(crate) fn server(&self) -> String {
        #[cfg(feature = "http")]
        let url = self.client.server();
        #[cfg(not(feature = "http"))]
        let url = self.plain.server();
        dtmcli::redact::redact_url(url).into_owned()
    }

    /// DTM's stored state of `gid`.
    pub(crate) async fn query(&self, gid: &str) -> Result<QueryResult> {
        dtmcli::identity::check_gid_not_empty(gid)?;
        #[cfg(feature = "http")]
        return self.client.query(gid).await;
        #[cfg(not(feature = "http"))]
        return self.plain.query(gid).await;
    }
}

// Also compiled for the tests of a build with `http`, so that the workspace's test run
// checks the reader (CI lints the build without `http`, tests included, on its own).
#[cfg(any(not(feature = "http"), test))]
#[cfg_attr(feature = "http", allow(dead_code))]
mod plain {
    use bytes::Bytes;
    use dtmcli::{Error, Limits, QueryResult, Result};
    use http_body_util::{BodyExt, Empty, Limited};

    /// A refusal of `url` as the HTTP API.
    fn bad_url(url: &str, why: &str) -> Error {
        Error::invalid(format!(
            "DTM HTTP API {:?} {why}: write http://host:port/api/dtmsvr",
            dtmcli::redact::redact_url(url)
        ))
    }

    /// `GET <base>/query?gid=` over one plain HTTP/1.1 connection per read.
    #[derive(Clone)]
    pub(super) struct Plain {
        url: String,
        /// `host:port` (the Host header), and the address to connect to.
        authority: String,
        /// The API's path (`/api/dtmsvr`), without a trailing `/`.
        path: String,
        limits: Limits,
    }

    impl Plain {
        pub(super) fn new(url: &str, limits: Limits) -> Result<Self> {
            let uri: http::Uri = url
                .parse()
                .map_err(|e| bad_url(url, &format!("is not a URL ({e})")))?;
            match uri.scheme_str() {
                Some("http") => {}
                Some("https") => {
                    return Err(bad_url(
                        url,
                        "is https://, which a build without dtmgrpc's `http` feature cannot reach",
                    ))
                }
                _ => return Err(bad_url(url, "is not http://")),
            }
            let authority = uri.authority().ok_or_else(|| bad_url(url, "has no host"))?;
            if authority.as_str().contains('@') {
                return Err(bad_url(
                    url,
                    "carries credentials, which this client does not send",
                ));
            }
            let path = uri.path().trim_end_matches('/').to_string();
            if path.is_empty() || uri.query().is_some() {
                return Err(bad_url(url, "needs a path and no query"));
            }
            let port = authority.port_u16().unwrap_or(80);
            Ok(Plain {
                url: url.to_string(),
                authority: format!("{}:{port}", authority.host()),
                path,
                limits,
            })
        }

        pub(super) fn server(&self) -> &str {
            &self.url
        }

        pub(super) async fn query(&self, gid: &str) -> Result<QueryResult> {
            let url = format!("{}/query", self.url.trim_end_matches('/'));
            let limit = self.limits.timeout();
            let body = tokio::time::timeout(
                limit,
                self.get(&format!("{}/query?gid={}", self.path, escape(gid))),
            )
            .await
            .map_err(|_| Error::other(format!("{}: no answer within {limit:?}", redact(&url))))??;
            serde_json::from_slice(&body).map_err(|e| Error::Decode {
                url: redact(&url),
                reason: e.to_string(),
                body: String::from_utf8_lossy(&body).chars().take(4096).collect(),
            })
        }

        /// One GET of `path_and_query`; the body of a 200, or [`Error::Status`].
        async fn get(&self, path_and_query: &str) -> Result<Bytes> {
            let url = redact(&self.url);
            let io = |e: &dyn std::fmt::Display| Error::other(format!("{url}: {e}"));
            let connect = tokio::net::TcpStream::connect(self.authority.as_str());
            let stream = tokio::time::timeout(self.limits.connect_timeout(), connect)
                .await
                .map_err(|_| {
                    io(&format!(
                        "no connection within {:?}",
                        self.limits.connect_timeout()
                    ))
                })?
                .map_err(|e| io(&e))?;
            let (mut sender, conn) =
                hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
                    .await
                    .map_err(|e| io(&e))?;
            // The connection lives as long as this one request (dropped with the sender).
            tokio::spawn(async move {
                let _ = conn.await;
            });
            let req = http::Request::get(path_and_query)
                .header(http::header::HOST, self.authority.as_str())
                .body(Empty::<Bytes>::new())
                .map_err(|e| io(&e))?;
            let resp = sender.send_request(req).await.map_err(|e| io(&e))?;
            let status = resp.status().as_u16();
            let max = self.limits.max_answer_bytes();
            let body = Limited::new(resp.into_body(), max)
                .collect()
                .await
                .map_err(|e| {
                    if e.is::<http_body_util::LengthLimitError>() {
                        Error::TooLarge {
                            url: url.clone(),
                            limit: max,
                        }
                    } else {
                        io(&e)
                    }
                })?
                .to_bytes();
            if status != 200 {
                return Err(Error::Status {
                    url,
                    status,
                    body: String::from_utf8_lossy(&body).chars().take(4096).collect(),
                });
            }
            Ok(body)
        }
    }

    fn redact(url: &str) -> String {
        dtmcli::redact::redact_url(url).into_owned()
    }

    /// `gid` percent-encoded for a query string: every byte but the unreserved ones.
    fn escape(gid: &str) -> String {
        let mut out = String::with_capacity(gid.len());
        for b in gid.bytes() {
            if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
                out.push(char::from(b));
            } else {
                out.push_str(&format!("%{b:02X}"));
            }
        }
        out
    }

    #[cfg(test)]
    mod tests {
        use super::*;

        #[test]
        fn urls_are_checked_and_gids_escaped() {
            let l = Limits::default();
            let p = Plain::new("http://127.0.0.1:36789/api/dtmsvr/", l).unwrap();
            assert_eq!(
                (p.authority.as_str(), p.path.as_str()),
                ("127.0.0.1:36789", "/api/dtmsvr")
            );
            assert_eq!(
                Plain::new("http://dtm/api/dtmsvr", l).unwrap().authority,
                "dtm:80"
            );
            for bad in [
                "https://h:1/api/dtmsvr",
                "h:1/api",
                "http://h:1",
                "http://u:pw@h:1/api/dtmsvr",
                "http://h:1/a?x=1",
            ] {
                let e = Plain::new(bad, l).err().unwrap();
                assert!(matches!(e, Error::InvalidInput(_)), "{bad}: {e:?}");
                assert!(!e.to_string().contains("pw"), "{e}");
            }
            assert_eq!(escape("a b&c=d/é"), "a%20b%26c%3Dd%2F%C3%A9");
        }

        /// A one-shot HTTP server answering `answer`; returns its base URL and the request
        /// it read.
        async fn serve(answer: String) -> (String, tokio::task::JoinHandle<String>) {
            use tokio::io::{AsyncReadExt, AsyncWriteExt};
            let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            let url = format!("http://{}/api/dtmsvr", l.local_addr().unwrap());
            let task = tokio::spawn(async move {
                let (mut c, _) = l.accept().await.unwrap();
                let mut buf = vec![0; 4096];
                let n = c.read(&mut buf).await.unwrap();
                c.write_all(answer.as_bytes()).await.unwrap();
                String::from_utf8_lossy(&buf[..n]).into_owned()
            });
            (url, task)
        }

        fn ok(body: &str) -> String {
            format!(
                "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{body}",
                body.len()
            )
        }

        #[tokio::test]
        async fn a_query_is_one_get_and_its_answer_is_bounded() {
            // DTM v1.19.0's answer to a query, shortened.
            let body = r#"{"branches":[],"transaction":{"gid":"g 1","trans_type":"saga","status":"submitted","rollback_reason":""}}"#;
            let (url, seen) = serve(ok(body)).await;
            let q = Plain::new(&url, Limits::default())
                .unwrap()
                .query("g 1")
                .await
                .unwrap();
            assert_eq!(q.transaction.unwrap().status, "submitted");
            let req = seen.await.unwrap();
            assert!(
                req.starts_with("GET /api/dtmsvr/query?gid=g%201 HTTP/1.1\r\n"),
                "{req}"
            );
            assert!(
                req.to_ascii_lowercase().contains("\r\nhost: 127.0.0.1:"),
                "{req}"
            );

            let mut small = Limits::default();
            small.set_max_answer_bytes(16);
            let (url, _) = serve(ok(body)).await;
            let e = Plain::new(&url, small)
                .unwrap()
                .query("g")
                .await
                .unwrap_err();
            assert!(matches!(e, Error::TooLarge { limit: 16, .. }), "{e:?}");

            let (url, _) =
                serve("HTTP/1.1 500 Internal Server Error\r\ncontent-length: 4\r\n\r\nboom".into())
                    .await;
            let e = Plain::new(&url, Limits::default())
                .unwrap()
                .query("g")
                .await
                .unwrap_err();
            assert!(matches!(e, Error::Status { status: 500, .. }), "{e:?}");

            let (url, _) = serve(ok("<html>")).await;
            let e = Plain::new(&url, Limits::default())
                .unwrap()
                .query("g")
                .await
                .unwrap_err();
            assert!(matches!(e, Error::Decode { .. }), "{e:?}");
        }

        #[tokio::test]
        async fn a_server_that_is_down_is_an_error_not_a_hang() {
            let port = std::net::TcpListener::bind("127.0.0.1:0")
                .unwrap()
                .local_addr()
                .unwrap()
                .port();
            let p = Plain::new(
                &format!("http://127.0.0.1:{port}/api/dtmsvr"),
                Limits::default(),
            )
            .unwrap();
            assert!(p.query("g").await.is_err());
        }
    }
}
