//! The live feed, `GET /api/feed`: entries as they commit, as server-sent events.
//!
//! Like a follower on the socket, a feed reads pages from the database and only waits on
//! the writer's commit counter, so it can never hold up a commit. Entries come coalesced:
//! one `entries` event holds every matching entry of a page (up to 1000), and a feed reads
//! at most ten pages a second once caught up, so 10,000 entries a second are ten events.
//! Each event's id is the last `seq` it covers; a browser that reconnects sends it back as
//! `Last-Event-ID` and resumes just after. One that takes nothing for `stall_timeout` is cut
//! off, and resumes the same way when it comes back.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State as Extract};
use axum::http::{HeaderMap, StatusCode};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use tokio::sync::{Semaphore, mpsc};
use witness_protocol::query::{EntriesQuery, Filter, StoredEntry};

use super::State;
use super::api::error;
use crate::read::{self, ExportLine};

/// Entries read a page.
const PAGE_ROWS: u32 = 1000;

/// The least time between two reads once caught up: what coalesces a fast log into few
/// events.
const COALESCE: Duration = Duration::from_millis(100);

/// Entries a new feed starts with when it does not resume.
const DEFAULT_NEWEST: u32 = 50;

/// Feeds open at once, at most, across every session.
pub const MAX_FEEDS: usize = 64;

/// The feeds' shared bound.
pub fn feeds() -> Arc<Semaphore> {
    Arc::new(Semaphore::new(MAX_FEEDS))
}

/// `GET /api/feed`'s parameters: the filter of the live view.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FeedParams {
    component: Option<String>,
    event: Option<String>,
    trace: Option<String>,
    /// Only entries of this model.
    model: Option<String>,
    /// Only entries whose event, component, trace, model or payload contain this text,
    /// whatever its case.
    text: Option<String>,
    /// Start with the newest this many matching entries (default 50); ignored on a resume.
    newest: Option<u32>,
    /// Resume after this `seq`, as `Last-Event-ID` does.
    after: Option<u64>,
}

/// The part of the filter the database does not do.
struct Matcher {
    model: Option<String>,
    text: Option<String>,
}

impl Matcher {
    fn matches(&self, stored: &StoredEntry) -> bool {
        let entry = &stored.entry;
        let model = entry.cost.as_ref().and_then(|cost| cost.model.as_deref());
        if let Some(wanted) = &self.model
            && model != Some(wanted.as_str())
        {
            return false;
        }
        let Some(text) = &self.text else {
            return true;
        };
        [
            Some(entry.event.as_str()),
            Some(entry.component.as_str()),
            entry.trace_id.as_deref(),
            model,
            Some(entry.payload.as_str()),
        ]
        .into_iter()
        .flatten()
        .any(|field| field.to_lowercase().contains(text))
    }
}

/// The `seq` a reconnecting browser last saw; `Err` when the header is not one.
fn last_event_id(headers: &HeaderMap) -> Result<Option<u64>, ()> {
    match headers.get("last-event-id") {
        None => Ok(None),
        Some(value) => value
            .to_str()
            .ok()
            .and_then(|text| text.trim().parse().ok())
            .map(Some)
            .ok_or(()),
    }
}

/// Serves one live feed until the browser leaves, stalls, or the daemon stops.
pub async fn feed(
    Extract(state): Extract<State>,
    headers: HeaderMap,
    params: Result<Query<FeedParams>, QueryRejection>,
) -> Response {
    let Query(params) = match params {
        Ok(params) => params,
        Err(rejection) => {
            return error(
                StatusCode::BAD_REQUEST,
                "BadRequest",
                &rejection.body_text(),
            );
        }
    };
    let Ok(resume) = last_event_id(&headers) else {
        return error(
            StatusCode::BAD_REQUEST,
            "BadRequest",
            "Last-Event-ID must be a seq",
        );
    };
    let resume = resume.or(params.after);
    let filter = Filter {
        component: params.component,
        event: params.event,
        trace_id: params.trace,
        since: None,
        until: None,
        after_seq: resume,
        to_seq: None,
    };
    let query = EntriesQuery {
        filter,
        newest: None,
        limit: None,
        follow: true,
    };
    if let Err(reply) = read::check_entries(&query) {
        return error(StatusCode::BAD_REQUEST, "BadRequest", &reply.message);
    }
    let matcher = Matcher {
        model: params.model,
        text: params
            .text
            .filter(|text| !text.is_empty())
            .map(|text| text.to_lowercase()),
    };
    let Ok(permit) = Arc::clone(&state.context.web.feeds).try_acquire_owned() else {
        let mut response = error(
            StatusCode::SERVICE_UNAVAILABLE,
            "Busy",
            &format!("{MAX_FEEDS} live feeds are open: close some"),
        );
        response
            .headers_mut()
            .insert("retry-after", axum::http::HeaderValue::from_static("5"));
        return response;
    };
    let newest = resume
        .is_none()
        .then(|| params.newest.unwrap_or(DEFAULT_NEWEST));
    let (events, receiver) = mpsc::channel::<Event>(2);
    let web = Arc::clone(&state.context.web);
    tokio::spawn(async move {
        let _permit = permit;
        follow(web, query.filter, newest, matcher, events).await;
    });
    let stream = futures_util::stream::unfold(receiver, |mut receiver| async move {
        receiver
            .recv()
            .await
            .map(|event| (Ok::<_, Infallible>(event), receiver))
    });
    Sse::new(stream)
        .keep_alive(KeepAlive::new().interval(Duration::from_secs(15)))
        .into_response()
}

/// Reads and sends pages after `filter.after_seq` until the browser goes or stalls.
async fn follow(
    web: Arc<super::WebContext>,
    mut filter: Filter,
    newest: Option<u32>,
    matcher: Matcher,
    events: mpsc::Sender<Event>,
) {
    let mut committed = web.committed.clone();
    if let Some(newest) = newest {
        let start = filter.clone();
        match web
            .reads
            .run(move |connection| read::newest_cursor(connection, &start, newest))
            .await
        {
            Ok(Some(cursor)) => filter.after_seq = Some(cursor),
            Ok(None) => {}
            Err(message) => return tracing::warn!(%message, "live feed failed"),
        }
    }
    // Tells the browser where it starts, and how soon to come back after a cut.
    let start = filter.after_seq.unwrap_or(0);
    let hello = Event::default()
        .event("start")
        .retry(Duration::from_secs(1))
        .data(format!("{{\"after\":{start}}}"));
    if events.send(hello).await.is_err() {
        return;
    }
    loop {
        committed.borrow_and_update();
        let page_filter = filter.clone();
        let last_read = tokio::time::Instant::now();
        let page = web
            .reads
            .run(move |connection| read::entries_page(connection, &page_filter, PAGE_ROWS))
            .await;
        let (page, cut_short) = match page {
            Ok(page) => page,
            Err(message) => return tracing::warn!(%message, "live feed failed"),
        };
        if let Some(last) = page.last() {
            let last = last.seq;
            filter.after_seq = Some(last);
            let lines: Vec<ExportLine<'_>> = page
                .iter()
                .filter(|stored| matcher.matches(stored))
                .map(ExportLine::new)
                .collect();
            // An event with no entries still moves the browser's Last-Event-ID on.
            let mut event = Event::default().id(last.to_string()).event("entries");
            event = event.data(serde_json::to_string(&lines).unwrap_or_else(|_| "[]".into()));
            match tokio::time::timeout(web.stall_timeout, events.send(event)).await {
                Ok(Ok(())) => {}
                Ok(Err(_)) => return,
                Err(_) => {
                    tracing::info!(after = last, "cutting off a stalled live feed");
                    return;
                }
            }
        }
        if cut_short || page.len() == PAGE_ROWS as usize {
            continue;
        }
        tokio::select! {
            changed = committed.changed() => if changed.is_err() { return },
            _ = events.closed() => return,
            _ = web.shutdown.cancelled() => return,
        }
        let since = last_read.elapsed();
        if since < COALESCE {
            tokio::select! {
                _ = tokio::time::sleep(COALESCE - since) => {}
                _ = events.closed() => return,
            }
        }
    }
}
