//! gRPC end to end: unary and bidirectional streaming through the proxy to an HTTP/2
//! upstream, trailers, and grpc-status on local errors.

use std::net::SocketAddr;
use std::pin::Pin;

use tokio_stream::{Stream, StreamExt};
use tonic::{Request, Response, Status, Streaming};

use crate::support::*;

pub mod pb {
    tonic::include_proto!("pilotfish.test.v1");
}

use pb::echo_client::EchoClient;
use pb::echo_server::{Echo, EchoServer};
use pb::{EchoReply, EchoRequest};

struct Svc(&'static str);

#[tonic::async_trait]
impl Echo for Svc {
    async fn unary(&self, req: Request<EchoRequest>) -> Result<Response<EchoReply>, Status> {
        let r = req.into_inner();
        if r.fail_with != 0 {
            return Err(Status::new(tonic::Code::from(r.fail_with), "asked to fail"));
        }
        Ok(Response::new(EchoReply {
            message: r.message,
            upstream: self.0.into(),
        }))
    }

    type ChatStream = Pin<Box<dyn Stream<Item = Result<EchoReply, Status>> + Send>>;

    async fn chat(
        &self,
        req: Request<Streaming<EchoRequest>>,
    ) -> Result<Response<Self::ChatStream>, Status> {
        let mut input = req.into_inner();
        let name = self.0;
        let out = async_stream(move |tx| async move {
            while let Some(Ok(m)) = input.next().await {
                if tx
                    .send(Ok(EchoReply {
                        message: format!("echo:{}", m.message),
                        upstream: name.into(),
                    }))
                    .await
                    .is_err()
                {
                    break;
                }
            }
        });
        Ok(Response::new(Box::pin(out)))
    }
}

/// A stream fed by a task through a channel.
fn async_stream<F, Fut>(f: F) -> impl Stream<Item = Result<EchoReply, Status>>
where
    F: FnOnce(tokio::sync::mpsc::Sender<Result<EchoReply, Status>>) -> Fut,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    let (tx, rx) = tokio::sync::mpsc::channel(16);
    tokio::spawn(f(tx));
    tokio_stream::wrappers::ReceiverStream::new(rx)
}

async fn grpc_upstream(name: &'static str) -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        tonic::transport::Server::builder()
            .add_service(EchoServer::new(Svc(name)))
            .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener))
            .await
            .unwrap();
    });
    addr
}

fn config(up: SocketAddr) -> String {
    let vhosts = "            - name: all\n              domains: [\"*\"]\n              routes:\n              - match: {prefix: /pilotfish.test.v1.Echo/Unary, grpc: {}, headers: [{name: x-dead, present_match: true}]}\n                route: {cluster: dead}\n              - match: {prefix: /, grpc: {}}\n                route: {cluster: grpc, timeout: 0s}\n";
    format!(
        "static_resources:\n  listeners:\n{}  clusters:\n{}{}",
        http_listener("in", vhosts, ""),
        cluster("grpc", &[up], H2_UPSTREAM),
        cluster("dead", &[], H2_UPSTREAM)
    )
}

async fn client(addr: SocketAddr) -> EchoClient<tonic::transport::Channel> {
    EchoClient::connect(format!("http://{addr}")).await.unwrap()
}

#[tokio::test]
async fn grpc_unary_and_error_status_pass_through() {
    let up = grpc_upstream("g").await;
    let p = Proxy::start(&config(up));
    let mut c = client(p.listener("in").await).await;
    let r = c
        .unary(EchoRequest {
            message: "hi".into(),
            fail_with: 0,
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!((r.message.as_str(), r.upstream.as_str()), ("hi", "g"));
    let err = c
        .unary(EchoRequest {
            message: "x".into(),
            fail_with: 5,
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::NotFound);
    assert_eq!(err.message(), "asked to fail");
    p.wait_stat("cluster.grpc.upstream_rq_200", 2).await;
    assert_eq!(p.stat("http.in.downstream_rq_http2_total").await, 2);
    assert_eq!(p.stat("cluster.grpc.upstream_cx_http2_total").await, 1);
}

#[tokio::test]
async fn grpc_bidirectional_streaming() {
    let up = grpc_upstream("g").await;
    let p = Proxy::start(&config(up));
    let mut c = client(p.listener("in").await).await;
    let (tx, rx) = tokio::sync::mpsc::channel(4);
    let mut replies = c
        .chat(tokio_stream::wrappers::ReceiverStream::new(rx))
        .await
        .unwrap()
        .into_inner();
    for i in 0..5 {
        // Each reply arrives before the next message is sent: both directions stream.
        tx.send(EchoRequest {
            message: format!("m{i}"),
            fail_with: 0,
        })
        .await
        .unwrap();
        let r = replies.next().await.unwrap().unwrap();
        assert_eq!(r.message, format!("echo:m{i}"));
    }
    drop(tx);
    assert!(
        replies.next().await.is_none(),
        "the stream ends with OK trailers"
    );
}

#[tokio::test]
async fn grpc_local_errors_carry_grpc_status() {
    let up = grpc_upstream("g").await;
    let p = Proxy::start(&config(up));
    let mut c = client(p.listener("in").await).await;
    let mut req = tonic::Request::new(EchoRequest {
        message: "x".into(),
        fail_with: 0,
    });
    req.metadata_mut().insert("x-dead", "1".parse().unwrap());
    let err = c.unary(req).await.unwrap_err();
    assert_eq!(err.code(), tonic::Code::Unavailable);
    assert_eq!(err.message(), "no healthy upstream");
}
