//! MQTT over WebSocket (feature `http`): `GET /mqtt` upgrades to a WebSocket with subprotocol
//! `mqtt` whose binary frames carry the MQTT byte stream to the same session driver as TLS.
//!
//! Each WebSocket connection is bridged to the driver through an in-memory pipe (two small
//! tasks and an 8 KiB pipe buffer): simpler than a second driver, and WebSocket devices are
//! expected to be fewer than raw MQTT/TLS ones.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use axum::Router;
use axum::extract::State;
use axum::extract::ws::{Message as WsMessage, WebSocket, WebSocketUpgrade};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use futures_util::{SinkExt, StreamExt};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::Inner;

/// The path of the upgrade route.
pub const PATH: &str = "/mqtt";

pub(crate) fn router(inner: Arc<Inner>) -> Router {
    Router::new().route(PATH, get(upgrade)).with_state(inner)
}

async fn upgrade(State(inner): State<Arc<Inner>>, ws: WebSocketUpgrade) -> Response {
    if inner.connections.load(Ordering::Relaxed) >= inner.config.max_connections {
        return hub_core::Error::unavailable("the hub is at its connection limit").into_response();
    }
    let max = inner.config.max_packet_size;
    ws.protocols(["mqtt"])
        .max_message_size(max)
        .max_frame_size(max)
        .on_upgrade(move |socket| bridge(inner, socket))
}

async fn bridge(inner: Arc<Inner>, socket: WebSocket) {
    inner.connections.fetch_add(1, Ordering::Relaxed);
    let (pipe, hub_side) = tokio::io::duplex(8 * 1024);
    let (mut from_hub, mut to_hub) = tokio::io::split(pipe);
    let (mut ws_tx, mut ws_rx) = socket.split();
    // Client frames into the pipe; the driver sees a byte stream (MQTT packets may span frames).
    let inbound = async move {
        while let Some(Ok(msg)) = ws_rx.next().await {
            match msg {
                WsMessage::Binary(b) => {
                    let written = to_hub.write_all(&b).await;
                    if written.is_err() {
                        break;
                    }
                }
                WsMessage::Close(_) => break,
                // MQTT over WebSocket is binary only; text frames are a protocol error.
                WsMessage::Text(_) => break,
                _ => {}
            }
        }
        let _ = to_hub.shutdown().await;
    };
    let outbound = async move {
        let mut buf = vec![0u8; 8 * 1024];
        loop {
            match from_hub.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    let frame = WsMessage::Binary(bytes::Bytes::copy_from_slice(&buf[..n]));
                    if ws_tx.send(frame).await.is_err() {
                        break;
                    }
                }
            }
        }
        let _ = ws_tx.close().await;
    };
    let session = crate::driver::run_connection(inner.clone(), hub_side, "mqtt-wss");
    tokio::join!(inbound, outbound, session);
    inner.connections.fetch_sub(1, Ordering::Relaxed);
}

/// The OpenAPI description of [`router`]'s one route.
pub(crate) fn openapi() -> utoipa::openapi::OpenApi {
    use utoipa::openapi::path::{HttpMethod, OperationBuilder, PathItem};
    use utoipa::openapi::{InfoBuilder, OpenApiBuilder, PathsBuilder, ResponseBuilder};
    let op = OperationBuilder::new()
        .tag("mqtt")
        .operation_id(Some("mqtt_websocket"))
        .summary(Some("MQTT over WebSocket"))
        .description(Some(
            "Upgrades to a WebSocket with subprotocol `mqtt` (MQTT 3.1.1 or 5.0 in binary \
             frames). Devices authenticate in CONNECT: user name = device id and password = \
             access key, or user name `oauth2` and a bearer token.",
        ))
        .response(
            "101",
            ResponseBuilder::new().description("Switching to the WebSocket protocol"),
        )
        .response(
            "503",
            ResponseBuilder::new().description("The hub is at its connection limit"),
        )
        .build();
    OpenApiBuilder::new()
        .info(
            InfoBuilder::new()
                .title("hub-transport")
                .version(env!("CARGO_PKG_VERSION"))
                .build(),
        )
        .paths(
            PathsBuilder::new()
                .path(PATH, PathItem::new(HttpMethod::Get, op))
                .build(),
        )
        .build()
}
