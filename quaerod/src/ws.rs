//! `/ws`: one connection per client, fed by its [`Outbox`]. The connection task only
//! moves what the outbox holds onto the socket; a client that does not read for
//! [`STUCK_AFTER`] is dropped, and meanwhile its pending messages merge in the outbox.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use quaero_shared::{ClientMessage, Hello, JobPath, ServerMessage};
use warp::http::StatusCode;
use warp::ws::{Message, WebSocket};
use warp::{Filter, Rejection, Reply};

use crate::aggregator::{Aggregator, OutMsg, Outbox};
use crate::api::ApiError;

pub const PING_EVERY: Duration = Duration::from_secs(30);
pub const STUCK_AFTER: Duration = Duration::from_secs(30);
/// Largest message a client may send; `subscribe` is tiny.
pub const MAX_CLIENT_MESSAGE: usize = 64 * 1024;

/// Whether an `Origin` header (if any) is this server itself. Browsers send it on every
/// WebSocket upgrade; tools usually do not. A page on another origin is refused.
fn origin_allowed(origin: Option<&str>, host: Option<&str>) -> bool {
    let Some(origin) = origin else { return true };
    let Some(host) = host else { return false };
    let o = origin.trim_start_matches("http://").trim_start_matches("https://");
    o.eq_ignore_ascii_case(host)
}

/// GET /ws: the WebSocket. The server sends `ServerMessage`s, the client may send
/// `ClientMessage`s (see docs/websocket.md).
#[utoipa::path(get, path = "/ws", tag = "daemon", security(("bearer" = []), ()),
    params(("token" = Option<String>, Query, description = "the token, for browsers (which cannot set headers here)")),
    responses((status = 101, description = "switched to the WebSocket protocol"),
        (status = 400, description = "not a WebSocket upgrade", body = quaero_shared::ErrorBody),
        (status = 401, body = quaero_shared::ErrorBody),
        (status = 403, description = "a foreign Origin", body = quaero_shared::ErrorBody)))]
pub fn route(
    agg: Arc<Aggregator>,
    token: Option<Arc<str>>,
) -> impl Filter<Extract = (impl Reply,), Error = Rejection> + Clone {
    crate::api::filters::endpoint0::<__path_route>()
        .and(same_origin())
        .and(crate::api::filters::auth_or_browser_token(token))
        .and(warp::header::optional::<String>("sec-websocket-protocol"))
        .and(warp::ws())
        .map(move |proto: Option<String>, ws: warp::ws::Ws| {
            let agg = agg.clone();
            let reply = ws
                .max_message_size(MAX_CLIENT_MESSAGE)
                .max_frame_size(MAX_CLIENT_MESSAGE)
                .on_upgrade(move |socket| serve(socket, agg));
            // Echo the first offered subprotocol, as browsers require when they offer one.
            match proto.and_then(|p| p.split(',').next().map(|s| s.trim().to_string())) {
                Some(p) if !p.is_empty() => {
                    warp::reply::with_header(reply, "sec-websocket-protocol", p).into_response()
                }
                _ => reply.into_response(),
            }
        })
}

/// Refuses an upgrade whose `Origin` is not this server (403): a page on another origin
/// cannot open a WebSocket to the daemon with the user's browser.
fn same_origin() -> impl Filter<Extract = (), Error = Rejection> + Clone {
    warp::header::optional::<String>("origin")
        .and(warp::header::optional::<String>("host"))
        .and_then(|origin: Option<String>, host: Option<String>| async move {
            if origin_allowed(origin.as_deref(), host.as_deref()) {
                Ok(())
            } else {
                Err(warp::reject::custom(ApiError {
                    status: StatusCode::FORBIDDEN,
                    message: "WebSocket upgrade from a foreign Origin refused".into(),
                }))
            }
        })
        .untuple_one()
}

fn encode(m: &OutMsg) -> Message {
    match m {
        OutMsg::Msg(m) => Message::text(serde_json::to_string(m).expect("message serialises")),
        OutMsg::Raw(s) => Message::text(s.to_string()),
    }
}

async fn serve(socket: WebSocket, agg: Arc<Aggregator>) {
    let (id, outbox) = agg.register();
    let (mut tx, mut rx) = socket.split();
    let hello = ServerMessage::Hello(Hello {
        version: env!("CARGO_PKG_VERSION").into(),
        mode: agg.mode.as_str().into(),
        time_threshold_ms: agg.threshold.as_millis() as u64,
    });
    let reader_outbox = outbox.clone();
    let mut reader = tokio::spawn(async move {
        while let Some(msg) = rx.next().await {
            let Ok(msg) = msg else { break };
            if msg.is_close() {
                break;
            }
            if let Ok(text) = msg.to_str() {
                handle_client_message(text, &reader_outbox);
            } else if msg.is_binary() {
                reader_outbox.add_error("binary messages are not understood; send JSON text".into());
            }
        }
    });

    let mut ping = tokio::time::interval(PING_EVERY);
    ping.tick().await;
    let mut first = Some(vec![Message::text(serde_json::to_string(&hello).expect("hello"))]);
    loop {
        let batch: Vec<Message> = if let Some(f) = first.take() {
            f
        } else {
            tokio::select! {
                _ = outbox.notify.notified() => outbox.take().iter().map(encode).collect(),
                _ = ping.tick() => vec![Message::ping(Vec::<u8>::new())],
                _ = &mut reader => break,
            }
        };
        if batch.is_empty() {
            continue;
        }
        match tokio::time::timeout(STUCK_AFTER, send_all(&mut tx, batch)).await {
            Ok(Ok(())) => {}
            Ok(Err(_)) => break,
            Err(_) => {
                tracing::info!(client = id, "dropping a WebSocket client that has not read for {STUCK_AFTER:?}");
                crate::metrics::METRICS.ws_clients_dropped.inc();
                break;
            }
        }
    }
    reader.abort();
    agg.unregister(id);
}

async fn send_all(
    tx: &mut futures_util::stream::SplitSink<WebSocket, Message>,
    msgs: Vec<Message>,
) -> Result<(), warp::Error> {
    for m in msgs {
        tx.feed(m).await?;
    }
    tx.flush().await
}

fn handle_client_message(text: &str, outbox: &Outbox) {
    match serde_json::from_str::<ClientMessage>(text) {
        Ok(ClientMessage::Subscribe { job_ids }) => {
            let mut set = HashSet::new();
            for id in &job_ids {
                match JobPath::parse(id) {
                    Some(p) => {
                        set.insert(p.manager);
                    }
                    None => {
                        outbox.add_error(format!("subscribe: {id:?} is not a job id"));
                        return;
                    }
                }
            }
            outbox.subscribe(set);
        }
        Err(e) => outbox.add_error(format!(
            "cannot understand {:?}: {e}; send {{\"type\":\"subscribe\",\"job_ids\":[...]}}",
            text.chars().take(100).collect::<String>()
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn origins() {
        assert!(origin_allowed(None, Some("127.0.0.1:8080")));
        assert!(origin_allowed(Some("http://127.0.0.1:8080"), Some("127.0.0.1:8080")));
        assert!(!origin_allowed(Some("http://evil.example"), Some("127.0.0.1:8080")));
        assert!(!origin_allowed(Some("http://127.0.0.1:9999"), Some("127.0.0.1:8080")));
    }
}
