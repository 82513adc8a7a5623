//! How a step's result is stored in a DTM branch record.
//!
//! The Go SDK stores the raw result. This SDK prefixes it with one header line naming the
//! kind of step and its target, so that a replay can tell when the code now asks for a
//! different step than the one recorded (non-determinism), and stores binary results as
//! base64 so they survive DTM's JSON string field intact:
//!
//! ```text
//! rs1 <kind> <t|b> <label>\n<payload: text, or base64 when b>
//! ```
//!
//! Records without the header (written by another SDK) are replayed as raw text and match
//! any step.

use base64::Engine;

const MAGIC: &str = "rs1";

/// A decoded step record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Record {
    /// `local`, `http`, `grpc`, `xa`, `commit`, `rollback`; `None` for foreign records.
    pub(crate) kind: Option<String>,
    /// The step's target (URL, gRPC method) when it has one.
    pub(crate) label: String,
    /// The result bytes (or the failure message).
    pub(crate) payload: Vec<u8>,
}

fn clean_label(label: &str) -> String {
    label
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect()
}

/// Encodes a record as the string DTM stores.
pub(crate) fn encode(kind: &str, label: &str, payload: &[u8]) -> String {
    let label = clean_label(label);
    match std::str::from_utf8(payload) {
        Ok(text) => format!("{MAGIC} {kind} t {label}\n{text}"),
        Err(_) => format!(
            "{MAGIC} {kind} b {label}\n{}",
            base64::engine::general_purpose::STANDARD.encode(payload)
        ),
    }
}

/// Decodes what DTM stored.
pub(crate) fn decode(data: &[u8]) -> Record {
    let foreign = || Record {
        kind: None,
        label: String::new(),
        payload: data.to_vec(),
    };
    let Ok(text) = std::str::from_utf8(data) else {
        return foreign();
    };
    let Some((head, body)) = text.split_once('\n') else {
        return foreign();
    };
    let mut parts = head.splitn(4, ' ');
    let (Some(MAGIC), Some(kind), Some(enc), label) = (
        parts.next(),
        parts.next(),
        parts.next(),
        parts.next().unwrap_or(""),
    ) else {
        return foreign();
    };
    let payload = match enc {
        "t" => body.as_bytes().to_vec(),
        "b" => match base64::engine::general_purpose::STANDARD.decode(body) {
            Ok(p) => p,
            Err(_) => return foreign(),
        },
        _ => return foreign(),
    };
    Record {
        kind: Some(kind.to_string()),
        label: label.to_string(),
        payload,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips() {
        let r = decode(encode("http", "POST http://h/x", b"{\"a\":1}").as_bytes());
        assert_eq!(r.kind.as_deref(), Some("http"));
        assert_eq!(r.label, "POST http://h/x");
        assert_eq!(r.payload, b"{\"a\":1}");
        let bin = [0u8, 159, 146, 150, 10];
        let r = decode(encode("grpc", "/p.S/M", &bin).as_bytes());
        assert_eq!(r.payload, bin);
        let r = decode(encode("local", "", b"").as_bytes());
        assert_eq!((r.kind.as_deref(), r.payload.len()), (Some("local"), 0));
        let r = decode(b"plain go result");
        assert_eq!(
            (r.kind, r.payload.as_slice()),
            (None, &b"plain go result"[..])
        );
    }
}
