//! Saga over gRPC: the saga of `dtmcli`, written once for every transport, over
//! [`DtmGrpcClient`], with protobuf step bodies.

use crate::client::DtmGrpcClient;

/// A saga over gRPC ([`DtmGrpcClient::saga`]): add steps (each an action and a compensation
/// URL, `host:port/pkg.Service/Method` or `http(s)://`, and a protobuf message both receive),
/// then submit. See [`dtmcli::Saga`].
pub type Saga = dtmcli::Saga<DtmGrpcClient>;

impl DtmGrpcClient {
    /// Starts a saga with global id `gid`.
    pub fn saga(&self, gid: impl Into<String>) -> Saga {
        Saga::new(self.clone(), gid)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pb::dtmgimp::DtmRequest;

    #[tokio::test]
    async fn request_shape() {
        let c = DtmGrpcClient::new("localhost:1").unwrap();
        let s = c
            .saga("g")
            .add_raw("h:1/a.B/C", "h:1/a.B/D", vec![8, 30])
            .add_raw("http://h/x", "", vec![8, 1])
            .add_branch_order(1, &[0])
            .concurrent();
        let r = DtmRequest::from(&s.request().unwrap());
        assert_eq!(
            r.steps,
            r#"[{"action":"h:1/a.B/C","compensate":"h:1/a.B/D"},{"action":"http://h/x","compensate":""}]"#
        );
        assert_eq!(r.bin_payloads, vec![vec![8, 30], vec![8, 1]]);
        assert_eq!(r.customed_data, r#"{"concurrent":true,"orders":{"1":[0]}}"#);
        let bad = c.saga("g").add_raw("h:1", "", vec![]);
        assert!(matches!(bad.request(), Err(dtmcli::Error::InvalidInput(_))));
        let order = c
            .saga("g")
            .add_raw("", "", vec![])
            .add_branch_order(0, &[0])
            .concurrent();
        assert!(order.request().is_err());
    }
}
