//! The live view: one long response per open page, in the SSE wire
//! format, read by the page with `fetch()` (which can send the
//! `Authorization` header, unlike `EventSource`).
//!
//! A stream's page gets `snapshot` events (the whole view, re-read every
//! [`SNAPSHOT_EVERY`] and sent when it changed) and `entries` events (the
//! newest entries once, then every appended entry as the Tail RPC delivers
//! it). The stream list gets `streams` events. A call the caller may not
//! make ends the response with an `error` event carrying the gRPC code and
//! message; a failed Tail only reports `tail-error`, since seeing groups
//! (`admin`) without reading entries (`consume`) is a legitimate grant.

use std::sync::Arc;
use std::time::Duration;

use serde_json::{Value, json};
use tokio::sync::mpsc::Sender;
use tonic::Status;

use super::http::{App, error_json};
use super::local::OnBehalf;
use super::snapshot;
use crate::pb;

/// How often the view is re-read from Redis: changes show within about
/// this long, well inside the page's one-second promise.
const SNAPSHOT_EVERY: Duration = Duration::from_millis(500);
/// Newest entries shown when a stream's page opens.
const NEWEST_SHOWN: u64 = 20;
/// Most ListStreams pages one refresh of the stream list reads.
const MAX_LIST_PAGES: usize = 20;

/// Runs one page's live response until the page goes away (the body, and
/// with it `tx`'s receiver, is dropped), the gateway shuts down, or a call
/// is refused.
pub(super) async fn run(app: Arc<App>, who: OnBehalf, stream: Option<String>, tx: Sender<String>) {
    let shutdown = app.shutdown.clone();
    let work = async {
        match stream {
            Some(name) => stream_view(&app, &who, &name, &tx).await,
            None => list_view(&app, &who, &tx).await,
        }
    };
    tokio::select! {
        () = shutdown.triggered() => {}
        () = tx.closed() => {}
        result = work => {
            if let Err(status) = result {
                let _ = tx.send(event("error", &error_json(&status))).await;
            }
        }
    }
}

/// One SSE event.
fn event(name: &str, data: &Value) -> String {
    format!("event: {name}\ndata: {data}\n\n")
}

/// Sends an event; `Err` (ending the view) when the page is gone.
async fn send(tx: &Sender<String>, name: &str, data: &Value) -> Result<(), Status> {
    tx.send(event(name, data))
        .await
        .map_err(|_| Status::cancelled("the page went away"))
}

async fn list_view(app: &App, who: &OnBehalf, tx: &Sender<String>) -> Result<(), Status> {
    let mut last = Value::Null;
    loop {
        let mut streams = Vec::new();
        let mut cursor = String::new();
        for _ in 0..MAX_LIST_PAGES {
            let page = app
                .local
                .admin()
                .list_streams(who.request(pb::ListStreamsRequest {
                    cursor: std::mem::take(&mut cursor),
                    limit: 0,
                }))
                .await?
                .into_inner();
            if let Value::Array(items) = snapshot::streams_json(&page)["streams"].take() {
                streams.extend(items);
            }
            cursor = page.next_cursor;
            if cursor.is_empty() {
                break;
            }
        }
        streams.sort_by(|a, b| a["name"].as_str().cmp(&b["name"].as_str()));
        let view = json!({ "streams": streams, "complete": cursor.is_empty() });
        if view != last {
            send(tx, "streams", &view).await?;
            last = view;
        }
        tokio::time::sleep(SNAPSHOT_EVERY).await;
    }
}

async fn stream_view(
    app: &App,
    who: &OnBehalf,
    name: &str,
    tx: &Sender<String>,
) -> Result<(), Status> {
    // The view first: it fails for a caller without `admin` on the stream,
    // before any entry is read.
    let first = snapshot::stream(&app.local, who, name, app.demo.as_deref()).await?;
    send(tx, "snapshot", &first).await?;
    let mut tail = match newest(app, who, name).await {
        Ok((entries, after)) => {
            send(
                tx,
                "entries",
                &json!({ "initial": true, "entries": entries }),
            )
            .await?;
            open_tail(app, who, name, after).await
        }
        Err(status) => Err(status),
    };
    if let Err(status) = &tail {
        send(tx, "tail-error", &error_json(status)).await?;
    }
    let mut last = first;
    let mut tick = tokio::time::interval(SNAPSHOT_EVERY);
    // A slow snapshot (Redis busy) delays the next one instead of
    // bunching the missed ones up.
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tick.tick().await;
    loop {
        tokio::select! {
            _ = tick.tick() => {
                let view = snapshot::stream(&app.local, who, name, app.demo.as_deref()).await?;
                if view != last {
                    send(tx, "snapshot", &view).await?;
                    last = view;
                }
            }
            message = next_tail(&mut tail) => match message {
                Ok(Some(entries)) if !entries.is_empty() => {
                    send(tx, "entries", &json!({ "initial": false, "entries": entries })).await?;
                }
                Ok(Some(_)) => {}
                Ok(None) | Err(_) => {
                    let status = match message {
                        Err(status) => status,
                        _ => Status::unavailable("the tail ended"),
                    };
                    send(tx, "tail-error", &error_json(&status)).await?;
                    tail = Err(status);
                }
            },
        }
    }
}

/// The newest entries, oldest first, and the ID to tail from so that
/// nothing falls between them.
async fn newest(app: &App, who: &OnBehalf, name: &str) -> Result<(Vec<Value>, String), Status> {
    let mut pages = app
        .local
        .events()
        .replay(who.request(pb::ReplayRequest {
            stream: name.to_owned(),
            limit: NEWEST_SHOWN,
            reverse: true,
            ..pb::ReplayRequest::default()
        }))
        .await?
        .into_inner();
    let mut entries = Vec::new();
    while let Some(page) = pages.message().await? {
        entries.extend(page.entries);
    }
    let after = entries
        .first()
        .map_or_else(|| "$".to_owned(), |e| e.id.clone());
    entries.reverse();
    Ok((entries.iter().map(snapshot::entry_json).collect(), after))
}

async fn open_tail(
    app: &App,
    who: &OnBehalf,
    name: &str,
    after: String,
) -> Result<tonic::Streaming<pb::TailResponse>, Status> {
    Ok(app
        .local
        .events()
        .tail(who.request(pb::TailRequest {
            stream: name.to_owned(),
            start_id: after,
            batch_size: 0,
            heartbeat_ms: Some(0),
        }))
        .await?
        .into_inner())
}

/// The next batch of the tail; never completes when there is no tail.
async fn next_tail(
    tail: &mut Result<tonic::Streaming<pb::TailResponse>, Status>,
) -> Result<Option<Vec<Value>>, Status> {
    let Ok(stream) = tail else {
        return std::future::pending().await;
    };
    Ok(stream.message().await?.map(|m| match m.kind {
        Some(pb::tail_response::Kind::Batch(batch)) => {
            batch.entries.iter().map(snapshot::entry_json).collect()
        }
        _ => Vec::new(),
    }))
}
