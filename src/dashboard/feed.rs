//! What one page's live view sends, through its [`Outbox`], when the page
//! may not keep up.
//!
//! Two kinds of events, two rules. Entries are a flow: those that do not
//! fit are skipped and counted, and before the next entries that fit the
//! page gets a `skipped` event with the count, so it can say it fell
//! behind (its newest entries are still the stream's newest). A view of
//! the whole stream (`snapshot`, `streams`, `tail-error`) replaces the one
//! before: one that does not fit is simply offered again later.

use serde_json::{Value, json};

use super::outbox::{Outbox, Refused};

/// Most bytes of one `entries` event (or the outbox's byte bound, if
/// smaller): a batch is cut into events of this size, so that one batch
/// of large entries is not one large event that only an empty queue
/// takes.
pub(super) const EVENT_BYTES: usize = 256 * 1024;

/// The page went away.
#[derive(Debug, PartialEq, Eq)]
pub(super) struct PageGone;

/// One page's events.
pub(super) struct Feed {
    out: Outbox,
    /// Entries skipped since the page was last told.
    skipped: u64,
}

/// One SSE event.
pub(super) fn event(name: &str, data: &Value) -> String {
    format!("event: {name}\ndata: {data}\n\n")
}

impl Feed {
    pub fn new(out: Outbox) -> Feed {
        Feed { out, skipped: 0 }
    }

    /// Sends entries (each as the page shows it), oldest first, in events
    /// of at most [`EVENT_BYTES`]; from the first that does not fit on,
    /// the rest are skipped and counted.
    pub fn entries(&mut self, initial: bool, entries: &[Value]) -> Result<(), PageGone> {
        let texts: Vec<String> = entries.iter().map(Value::to_string).collect();
        let mut at = 0;
        while at < texts.len() {
            if !self.tell_skipped()? {
                self.skipped += (texts.len() - at) as u64;
                return Ok(());
            }
            let max = EVENT_BYTES.min(self.out.max_bytes());
            let (text, taken) = entries_event(initial, &texts[at..], max);
            match self.out.offer(text) {
                Ok(()) => at += taken,
                Err(refused) => return self.skip(refused, texts.len() - at),
            }
        }
        Ok(())
    }

    /// Tells the page how many entries it missed, if any; `false` when
    /// that did not fit either.
    pub fn tell_skipped(&mut self) -> Result<bool, PageGone> {
        if self.skipped == 0 {
            return Ok(true);
        }
        let notice = event("skipped", &json!({ "entries": self.skipped }));
        match self.out.offer(notice) {
            Ok(()) => {
                self.skipped = 0;
                Ok(true)
            }
            Err(Refused::Full) => Ok(false),
            Err(Refused::Gone) => Err(PageGone),
        }
    }

    fn skip(&mut self, refused: Refused, entries: usize) -> Result<(), PageGone> {
        match refused {
            Refused::Full => {
                self.skipped += entries as u64;
                Ok(())
            }
            Refused::Gone => Err(PageGone),
        }
    }

    /// Sends a view that replaces the previous one of its name; `false`
    /// when it did not fit, to be offered again later.
    pub fn view(&mut self, name: &str, data: &Value) -> Result<bool, PageGone> {
        match self.out.offer(event(name, data)) {
            Ok(()) => Ok(true),
            Err(Refused::Full) => Ok(false),
            Err(Refused::Gone) => Err(PageGone),
        }
    }

    /// Whether the page has taken nothing for the stall limit while
    /// events waited.
    pub fn stalled(&self) -> bool {
        self.out.stalled()
    }

    /// Ends the response with a last event, if it fits; a page that does
    /// not read would not see it anyway.
    pub fn end_with(self, name: &str, data: &Value) {
        let _ = self.out.offer(event(name, data));
    }

    /// Disconnects the page, dropping what waits for it.
    pub fn abort(self) {
        self.out.abort();
    }
}

/// An `entries` event with as many of `texts` (JSON entries) as fit in
/// `max` bytes, at least one; and how many it took.
fn entries_event(initial: bool, texts: &[String], max: usize) -> (String, usize) {
    const TAIL: &str = "]}\n\n";
    let mut text = format!("event: entries\ndata: {{\"initial\":{initial},\"entries\":[");
    let mut taken = 0;
    for entry in texts {
        if taken > 0 && text.len() + 1 + entry.len() + TAIL.len() > max {
            break;
        }
        if taken > 0 {
            text.push(',');
        }
        text.push_str(entry);
        taken += 1;
    }
    text.push_str(TAIL);
    (text, taken)
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use tokio_stream::StreamExt;

    use super::super::LiveLimits;
    use super::super::outbox::{Sending, outbox};
    use super::*;

    fn feed(queued_events: usize, queued_bytes: usize) -> (Feed, Sending) {
        let (out, sending) = outbox(LiveLimits {
            max_views: 1,
            queued_events,
            queued_bytes,
            stall: Duration::from_secs(60),
        });
        (Feed::new(out), sending)
    }

    fn entry(i: usize, bytes: usize) -> Value {
        json!({ "id": format!("{i}-0"), "fields": { "v": "x".repeat(bytes) } })
    }

    /// Every event queued now, parsed: (name, data).
    async fn drain(sending: &mut Sending, feed: Feed) -> Vec<(String, Value)> {
        drop(feed);
        let mut events = Vec::new();
        while let Some(text) = sending.next().await {
            let text = text.unwrap();
            let (head, data) = text.trim_end().split_once('\n').unwrap();
            let name = head.strip_prefix("event: ").unwrap().to_owned();
            let data = serde_json::from_str(data.strip_prefix("data: ").unwrap()).unwrap();
            events.push((name, data));
        }
        events
    }

    fn ids(data: &Value) -> Vec<String> {
        data["entries"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e["id"].as_str().unwrap().to_owned())
            .collect()
    }

    #[tokio::test]
    async fn a_page_that_does_not_read_is_told_what_it_missed() {
        let (mut feed, mut sending) = feed(4, 1024 * 1024);
        // Ten batches of one entry while the page reads nothing: four
        // fit, six are skipped.
        for i in 0..10 {
            feed.entries(false, &[entry(i, 10)]).unwrap();
        }
        // The page catches up, then the stream goes on.
        let mut events = Vec::new();
        for _ in 0..4 {
            events.push(sending.next().await.unwrap().unwrap());
        }
        feed.entries(false, &[entry(10, 10)]).unwrap();
        let after = drain(&mut sending, feed).await;
        assert_eq!(events.len(), 4);
        assert!(events.iter().all(|e| e.starts_with("event: entries\n")));
        assert_eq!(after.len(), 2, "{after:?}");
        assert_eq!(after[0], ("skipped".to_owned(), json!({ "entries": 6 })));
        assert_eq!(after[1].0, "entries");
        assert_eq!(ids(&after[1].1), ["10-0"]);
    }

    #[tokio::test]
    async fn a_page_that_catches_up_on_a_quiet_stream_is_told_too() {
        let (mut feed, mut sending) = feed(1, 1024);
        feed.entries(false, &[entry(1, 1), entry(2, 1)]).unwrap();
        feed.entries(false, &[entry(3, 1)]).unwrap();
        assert_eq!(feed.tell_skipped(), Ok(false), "no room yet");
        sending.next().await.unwrap().unwrap();
        assert_eq!(feed.tell_skipped(), Ok(true));
        let events = drain(&mut sending, feed).await;
        assert_eq!(events, [("skipped".to_owned(), json!({ "entries": 1 }))]);
    }

    #[tokio::test]
    async fn what_is_held_stays_within_the_byte_bound() {
        let (mut feed, mut sending) = feed(64, 64 * 1024);
        // Forty entries of 4 KiB in one batch: cut into events, and what
        // does not fit in 64 KiB is skipped, not held.
        let batch: Vec<Value> = (0..40).map(|i| entry(i, 4096)).collect();
        feed.entries(false, &batch).unwrap();
        let mut held = 0;
        let mut shown = Vec::new();
        let events = drain(&mut sending, feed).await;
        for (name, data) in &events {
            assert_eq!(name, "entries");
            held += data.to_string().len();
            shown.extend(ids(data));
        }
        assert!(held <= 64 * 1024, "held {held} bytes");
        assert!(shown.len() < 40, "nothing was skipped");
        let expected: Vec<String> = (0..shown.len()).map(|i| format!("{i}-0")).collect();
        assert_eq!(shown, expected, "the oldest are sent, in order");
    }

    #[tokio::test]
    async fn a_batch_is_cut_into_events_of_bounded_size() {
        let (mut feed, mut sending) = feed(64, 16 * 1024 * 1024);
        let batch: Vec<Value> = (0..100).map(|i| entry(i, 10 * 1024)).collect();
        feed.entries(true, &batch).unwrap();
        let mut shown = Vec::new();
        let mut events = 0;
        while shown.len() < 100 {
            let text = sending.next().await.unwrap().unwrap();
            assert!(text.len() <= EVENT_BYTES, "{} bytes", text.len());
            let data: Value =
                serde_json::from_str(text.trim_end().split_once("\ndata: ").unwrap().1).unwrap();
            assert_eq!(data["initial"], true);
            shown.extend(ids(&data));
            events += 1;
        }
        assert!(events > 1);
        let expected: Vec<String> = (0..100).map(|i| format!("{i}-0")).collect();
        assert_eq!(shown, expected);
    }

    #[tokio::test]
    async fn a_view_that_does_not_fit_is_refused_not_held() {
        let (mut feed, mut sending) = feed(1, 1024);
        assert_eq!(feed.view("snapshot", &json!({ "n": 1 })), Ok(true));
        assert_eq!(feed.view("snapshot", &json!({ "n": 2 })), Ok(false));
        sending.next().await.unwrap().unwrap();
        assert_eq!(feed.view("snapshot", &json!({ "n": 3 })), Ok(true));
        drop(sending);
        assert_eq!(feed.view("snapshot", &json!({ "n": 4 })), Err(PageGone));
        assert_eq!(feed.entries(false, &[entry(1, 1)]), Err(PageGone));
    }
}
