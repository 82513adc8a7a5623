//! The channel every gRPC call of the SDK goes through: tonic's `Channel`, or the same
//! wrapped in the caller's tower layer ([`crate::DtmGrpcClientBuilder::layer`]), erased to
//! one type so that calls to DTM and to branches are written once.

use std::sync::Arc;

use tonic::body::Body;
use tonic::transport::Channel;
use tower::util::BoxCloneSyncService;
use tower::ServiceExt;

/// An error of a wrapped channel.
pub type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// A channel to DTM or to a branch, as the SDK calls it.
pub type GrpcChannel = BoxCloneSyncService<http::Request<Body>, http::Response<Body>, ChannelError>;

/// The error of a [`GrpcChannel`]: the channel's or the layer's error, as its source (tonic
/// finds a `Status` or an h2 error through it). A named type rather than a boxed
/// `dyn Error`: rustc cannot show the boxed form's futures `Send` inside async fns.
#[derive(Debug)]
pub struct ChannelError(BoxError);

impl std::fmt::Display for ChannelError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.fmt(f)
    }
}

impl std::error::Error for ChannelError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(&*self.0)
    }
}

/// Makes a [`GrpcChannel`] of each channel the client opens (to DTM, to each branch).
pub(crate) type Wrap = Arc<dyn Fn(Channel) -> GrpcChannel + Send + Sync>;

/// No layer: the channel itself.
pub(crate) fn plain() -> Wrap {
    Arc::new(|c: Channel| BoxCloneSyncService::new(c.map_err(boxed::<tonic::transport::Error>)))
}

fn boxed<E: Into<BoxError>>(e: E) -> ChannelError {
    ChannelError(e.into())
}

/// Every channel wrapped in `layer`; its answers' bodies are boxed back into tonic's.
pub(crate) fn layered<L, S, RB>(layer: L) -> Wrap
where
    L: tower_layer::Layer<Channel, Service = S> + Send + Sync + 'static,
    S: tower_service::Service<http::Request<Body>, Response = http::Response<RB>>
        + Clone
        + Send
        + Sync
        + 'static,
    S::Future: Send + 'static,
    S::Error: Into<BoxError>,
    RB: http_body::Body<Data = bytes::Bytes> + Send + 'static,
    RB::Error: Into<BoxError>,
{
    Arc::new(move |c: Channel| {
        let svc = layer
            .layer(c)
            .map_response(|r: http::Response<RB>| r.map(Body::new))
            .map_err(boxed::<S::Error>);
        BoxCloneSyncService::new(svc)
    })
}
