//! 2-phase messages over gRPC: the msg of `dtmcli`, written once for every transport, over
//! [`DtmGrpcClient`], with protobuf branch bodies.

use crate::client::DtmGrpcClient;

/// A 2-phase message over gRPC ([`DtmGrpcClient::msg`]); its back-check branch
/// (`query_prepared`) is a gRPC method (`host:port/pkg.Service/Method`) or an `http(s)://`
/// URL. See [`dtmcli::Msg`]. DTM's gRPC API cannot ask for concurrent delivery.
pub type Msg = dtmcli::Msg<DtmGrpcClient>;

impl DtmGrpcClient {
    /// Starts a 2-phase message with global id `gid`.
    pub fn msg(&self, gid: impl Into<String>) -> Msg {
        Msg::new(self.clone(), gid)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pb::dtmgimp::DtmRequest;
    use dtmcli::Error;
    use std::time::Duration;

    #[tokio::test]
    async fn delay_only_on_submit() {
        let c = DtmGrpcClient::new("localhost:1").unwrap();
        let m = c
            .msg("g")
            .add_raw("h:1/a.B/C", vec![1])
            .add_topic("t", &())
            .delay(Duration::from_secs(10));
        let p = DtmRequest::from(&m.prepare_request("h:1/a.B/Q").unwrap());
        assert_eq!(p.customed_data, "");
        assert_eq!(p.query_prepared, "h:1/a.B/Q");
        assert!(p.steps.contains("topic://t"));
        let s = DtmRequest::from(&m.submit_request().unwrap());
        assert_eq!(s.customed_data, r#"{"delay":10}"#);
        assert!(m.prepare_request("nonsense").is_err());
        let e = c
            .msg("g")
            .add_raw("h:1", vec![])
            .submit_request()
            .unwrap_err();
        assert!(matches!(e, Error::InvalidInput(_)));
    }
}
