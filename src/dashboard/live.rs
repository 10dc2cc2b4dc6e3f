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
//!
//! The view never waits for the page ([`Feed`]): it keeps reading the Tail
//! and skips the entries a page behind cannot take (telling it how many in
//! a `skipped` event), and an entry larger than the page shows goes out
//! without its fields. So what the gateway holds per page is its outbox
//! plus one Tail batch, whatever the stream does and however the page
//! reads; a page that reads nothing at all is disconnected after the
//! stall limit.

use std::sync::Arc;
use std::time::Duration;

use serde_json::{Value, json};
use tokio::sync::OwnedSemaphorePermit;
use tonic::Status;

use super::feed::{Feed, PageGone};
use super::http::{App, error_json};
use super::outbox::Outbox;
use super::snapshot;
use crate::local::OnBehalf;
use crate::pb;

/// How often the view is re-read from Redis: changes show within about
/// this long, well inside the page's one-second promise. A page that is
/// behind is checked for a stall as often.
const SNAPSHOT_EVERY: Duration = Duration::from_millis(500);
/// Newest entries shown when a stream's page opens.
const NEWEST_SHOWN: u64 = 20;
/// Most ListStreams pages one refresh of the stream list reads.
const MAX_LIST_PAGES: usize = 20;

/// Why a view ended.
enum End {
    /// A call was refused or failed: the page is told.
    Refused(Status),
    /// The page went away.
    Gone,
    /// The page took nothing for the stall limit.
    Stalled,
}

impl From<Status> for End {
    fn from(status: Status) -> End {
        End::Refused(status)
    }
}

impl From<PageGone> for End {
    fn from(_: PageGone) -> End {
        End::Gone
    }
}

/// Runs one page's live response until the page goes away (the body is
/// dropped), the gateway shuts down, a call is refused or the page
/// stalls. Holds `_view`, its place among the open live views, until then.
pub(super) async fn run(
    app: Arc<App>,
    who: OnBehalf,
    stream: Option<String>,
    outbox: Outbox,
    _view: OwnedSemaphorePermit,
) {
    let shutdown = app.shutdown.clone();
    let gone = outbox.gone();
    let mut feed = Feed::new(outbox);
    let work = async {
        match &stream {
            Some(name) => stream_view(&app, &who, name, &mut feed).await,
            None => list_view(&app, &who, &mut feed).await,
        }
    };
    let end = tokio::select! {
        () = shutdown.triggered() => End::Gone,
        () = gone => End::Gone,
        Err(end) = work => end,
    };
    match end {
        End::Refused(status) => feed.end_with("error", &error_json(&status)),
        End::Stalled => {
            tracing::info!(
                stream = stream.as_deref().unwrap_or("(list)"),
                peer = ?who.peer,
                "a dashboard page took nothing for {:?}; disconnected",
                app.limits.stall
            );
            feed.abort();
        }
        End::Gone => {}
    }
}

async fn list_view(app: &App, who: &OnBehalf, feed: &mut Feed) -> Result<(), End> {
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
        if view != last && feed.view("streams", &view)? {
            last = view;
        }
        tokio::time::sleep(SNAPSHOT_EVERY).await;
        if feed.stalled() {
            return Err(End::Stalled);
        }
    }
}

async fn stream_view(app: &App, who: &OnBehalf, name: &str, feed: &mut Feed) -> Result<(), End> {
    // The view first: it fails for a caller without `admin` on the stream,
    // before any entry is read.
    let first = snapshot::stream(&app.local, who, name, app.demo.as_deref()).await?;
    let mut last = Value::Null;
    if feed.view("snapshot", &first)? {
        last = first;
    }
    let mut tail = match newest(app, who, name).await {
        Ok((entries, after)) => {
            feed.entries(true, &entries)?;
            open_tail(app, who, name, after).await
        }
        Err(status) => Err(status),
    };
    // A tail-error the page has not been sent yet.
    let mut untold = tail.as_ref().err().map(error_json);
    let mut tick = tokio::time::interval(SNAPSHOT_EVERY);
    // A slow snapshot (Redis busy) delays the next one instead of
    // bunching the missed ones up.
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tick.tick().await;
    loop {
        // What the page was not told because it was behind, once it has
        // room again (without waiting for the next entries).
        feed.tell_skipped()?;
        if let Some(error) = &untold
            && feed.view("tail-error", error)?
        {
            untold = None;
        }
        tokio::select! {
            _ = tick.tick() => {
                if feed.stalled() {
                    return Err(End::Stalled);
                }
                let view = snapshot::stream(&app.local, who, name, app.demo.as_deref()).await?;
                if view != last && feed.view("snapshot", &view)? {
                    last = view;
                }
            }
            message = next_tail(&mut tail) => match message {
                Ok(Some(entries)) => feed.entries(false, &entries)?,
                Ok(None) | Err(_) => {
                    let status = match message {
                        Err(status) => status,
                        _ => Status::unavailable("the tail ended"),
                    };
                    untold = Some(error_json(&status));
                    tail = Err(status);
                }
            },
        }
    }
}

/// The newest entries, oldest first, as the page shows them, and the ID
/// to tail from so that nothing falls between them. Each page of the
/// Replay is turned into what the page shows as it arrives, so large
/// entries are not held whole.
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
    let mut after = None;
    while let Some(page) = pages.message().await? {
        if after.is_none() {
            after = page.entries.first().map(|e| e.id.clone());
        }
        entries.extend(page.entries.iter().map(snapshot::entry_shown));
    }
    entries.reverse();
    Ok((entries, after.unwrap_or_else(|| "$".to_owned())))
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

/// The next batch of the tail, as the page shows it; never completes when
/// there is no tail.
async fn next_tail(
    tail: &mut Result<tonic::Streaming<pb::TailResponse>, Status>,
) -> Result<Option<Vec<Value>>, Status> {
    let Ok(stream) = tail else {
        return std::future::pending().await;
    };
    Ok(stream.message().await?.map(|m| match m.kind {
        Some(pb::tail_response::Kind::Batch(batch)) => {
            batch.entries.iter().map(snapshot::entry_shown).collect()
        }
        _ => Vec::new(),
    }))
}
