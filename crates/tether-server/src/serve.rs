//! The accept loop: TCP (optionally TLS), the per-address connection limit,
//! HTTP/1.1 with upgrades, the handshake timeout (TLS handshake and request
//! headers: a slow-loris client is cut) and graceful shutdown of idle HTTP
//! connections.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::ConnectInfo;
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpListener;
use tower::Service;

use crate::AppState;
use crate::limits::KeyedGuard;
use crate::metrics::ConnectionGuard;
use crate::router::router;
use crate::tls::ReloadingTls;

pub(crate) async fn accept_loop(
    state: Arc<AppState>,
    listener: TcpListener,
    tls: Option<ReloadingTls>,
) {
    let app = router(Arc::clone(&state));
    let mut shutdown = state.shutdown.clone();
    loop {
        let (tcp, peer) = tokio::select! {
            _ = shutdown.changed() => break,
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(error) => {
                    // E.g. out of file descriptors: back off, keep serving.
                    tracing::warn!(%error, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        // Closed at once, before any byte is read: one address cannot
        // hold every socket the server has.
        let Some(per_ip) = state.admission.tcp(peer.ip()) else {
            state.metrics.rejected("max_connections_per_ip");
            tracing::debug!(%peer, "refused: too many connections from this address");
            drop(tcp);
            continue;
        };
        let app = app.clone();
        let state = Arc::clone(&state);
        let tls = tls.clone();
        let held = TcpHeld {
            _held: Arc::new((per_ip, state.metrics.tcp_connection())),
        };
        tokio::spawn(async move {
            let _ = tcp.set_nodelay(true);
            match tls {
                None => serve_connection(state, app, tcp, peer, held).await,
                Some(tls) => {
                    let handshake = tls.acceptor().accept(tcp);
                    match tokio::time::timeout(state.config.limits.handshake_timeout, handshake)
                        .await
                    {
                        Ok(Ok(stream)) => serve_connection(state, app, stream, peer, held).await,
                        Ok(Err(error)) => {
                            state.metrics.rejected("tls_handshake");
                            tracing::debug!(%peer, %error, "TLS handshake failed");
                        }
                        Err(_) => {
                            state.metrics.rejected("handshake_timeout");
                            tracing::debug!(%peer, "TLS handshake timed out");
                        }
                    }
                }
            }
        });
    }
    tracing::debug!("accept loop stopped");
}

/// What a TCP connection holds while it is open: its place under the
/// per-address limit and the `tether_tcp_connections` gauge. Every request
/// carries a clone (as an extension), so a WebSocket upgrade keeps holding
/// it after the HTTP connection handed its socket over.
#[derive(Debug, Clone)]
pub(crate) struct TcpHeld {
    _held: Arc<(KeyedGuard<IpAddr>, ConnectionGuard)>,
}

async fn serve_connection<I>(
    state: Arc<AppState>,
    app: Router,
    io: I,
    peer: SocketAddr,
    held: TcpHeld,
) where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let service = hyper::service::service_fn(move |request: hyper::Request<Incoming>| {
        let mut app = app.clone();
        let mut request = request.map(axum::body::Body::new);
        request.extensions_mut().insert(ConnectInfo(peer));
        request.extensions_mut().insert(held.clone());
        async move { app.call(request).await }
    });
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(state.config.limits.handshake_timeout);
    let connection = builder
        .serve_connection(TokioIo::new(io), service)
        .with_upgrades();
    tokio::pin!(connection);
    let mut shutdown = state.shutdown.clone();
    tokio::select! {
        result = connection.as_mut() => {
            if let Err(error) = result {
                tracing::debug!(%peer, %error, "HTTP connection ended");
            }
        }
        _ = shutdown.changed() => {
            connection.as_mut().graceful_shutdown();
            let _ = tokio::time::timeout(Duration::from_secs(5), connection).await;
        }
    }
}
