//! Delivery guarantees beyond XREADGROUP/XACK: reclaim with dead letters,
//! Nack, Extend, the consumer's in-flight count, and the safe-trim floor.
use super::reply::{self, Cursor};
use super::{Broker, scripts};
use crate::error::Result;
use crate::ids::StreamId;
use crate::model::{Delivered, Entry};

/// What one reclaim round is allowed to do.
#[derive(Clone, Debug)]
pub struct ReclaimSpec<'a> {
    /// Group.
    pub group: &'a str,
    /// The consumer taking entries over.
    pub consumer: &'a str,
    /// Minimum idle time of an entry taken over by the idle scan.
    pub min_idle_ms: u64,
    /// Where the idle scan continues: after this ID, or from the start.
    pub after: Option<StreamId>,
    /// Entries to take at most.
    pub count: u32,
    /// Dead-letter an entry already delivered this often (0 = never).
    pub max_deliveries: u32,
    /// Client name of the dead-letter stream.
    pub dead_letter_stream: &'a str,
}

/// The outcome of a reclaim round.
#[derive(Clone, Debug, Default)]
pub struct Reclaimed {
    /// Entries now owned by the consumer, marked as re-deliveries with
    /// their delivery counts.
    pub entries: Vec<Entry>,
    /// IDs found deleted while pending (recorded as dead letters).
    pub deleted_ids: Vec<StreamId>,
    /// IDs moved to the dead-letter stream.
    pub dead_lettered: Vec<StreamId>,
    /// Where the next idle scan continues; `None` after a complete scan.
    pub after: Option<StreamId>,
    /// Due time (Unix ms) of the group's earliest Nack still scheduled.
    pub next_nack_due_ms: Option<i64>,
}

/// The dead-letter candidates of a script's reply: rows `{id, owner,
/// deliveries, reason, {fields...}}` (see `scripts::RECLAIM`).
pub(super) fn dead_letters(rows: Cursor) -> Result<Vec<DeadLetter>> {
    let mut dead = Vec::new();
    for item in rows.rows("dead letter") {
        let mut item = item?;
        dead.push(DeadLetter {
            id: item.next_id()?,
            owner: item.next_bytes()?,
            deliveries: item.next_uint()?,
            reason: item.next_string()?,
            fields: reply::pairs(item.next_value()?)?,
        });
        item.finish()?;
    }
    Ok(dead)
}

/// A dead-letter candidate of a reclaim round or an ordered read.
#[derive(Clone, Debug)]
pub(super) struct DeadLetter {
    id: StreamId,
    /// The consumer it was pending for.
    owner: Vec<u8>,
    deliveries: u64,
    /// `max_deliveries` or `trimmed`.
    reason: String,
    /// The entry's payload (empty when trimmed).
    fields: Vec<(Vec<u8>, Vec<u8>)>,
}

/// Which of the IDs an ack, nack or extend acted on.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Outcome {
    /// IDs the operation took effect for, in request order.
    pub done: Vec<StreamId>,
    /// IDs that were not pending (for the consumer, or for an ack in the
    /// group): nothing was done for them.
    pub not_pending: Vec<StreamId>,
}

impl Outcome {
    /// Sorts `asked` into done and not pending, given what was done: the
    /// per-ID scripts go through their IDs in order, so `done` is a
    /// subsequence of `asked` and one walk over both sorts them (an ID asked
    /// twice is done once, then not pending).
    fn split(asked: &[StreamId], done: Vec<StreamId>) -> Outcome {
        let mut done = done.into_iter().peekable();
        let (done, not_pending) = asked
            .iter()
            .partition(|id| done.next_if(|d| d == *id).is_some());
        Outcome { done, not_pending }
    }
}

impl Broker {
    /// The sorted set holding a group's Nack schedule.
    pub(super) fn nack_key(&self, stream: &str, group: &str) -> String {
        self.aux_key(stream, &format!("nack:{group}"))
    }

    /// One reclaim round (see `scripts::RECLAIM`), then the move of its
    /// dead-letter candidates.
    ///
    /// The dead-letter stream is a key of its own, in another cluster slot
    /// than the source stream, so no one script can both write the dead
    /// letter and acknowledge the entry. The move is two steps instead, and
    /// stays exactly-once:
    ///
    /// 1. [`Broker::write_dead_letters`]: XADD the record to the dead-letter
    ///    stream unless its marker (named by source stream, group and entry
    ///    ID, in the dead-letter stream's slot) exists, then set the
    ///    marker in the same script. Repeating this step writes nothing
    ///    twice, and a record that cannot be written leaves no marker: the
    ///    step fails, so step 2 does not run (see `scripts::DEAD_LETTER`).
    /// 2. XACK the entry in the source stream.
    ///
    /// Until step 2 the entry stays pending, so a gateway that crashes (or a
    /// step that fails) in between leaves it to the next reclaim round, of
    /// this gateway or another, which repeats step 1 (writing nothing) and
    /// step 2: the record is never lost. Two gateways moving the same entry
    /// concurrently both run step 1 (one writes) and step 2 (one acks, and
    /// only that one reports the entry). Markers live for the dedup window
    /// (`--dedup-window-ms`): a duplicate would need step 2 to keep failing
    /// for longer than that while step 1 is retried.
    pub async fn reclaim(&self, stream: &str, spec: &ReclaimSpec<'_>) -> Result<Reclaimed> {
        let cursor = spec
            .after
            .map_or_else(|| "-".to_owned(), |id| format!("({id}"));
        let mut call = scripts::RECLAIM.key(self.key(stream));
        call.key(self.nack_key(stream, spec.group))
            .arg(spec.group)
            .arg(spec.consumer)
            .arg(spec.min_idle_ms)
            .arg(cursor)
            .arg(spec.count)
            .arg(spec.max_deliveries)
            .arg(super::now_ms());
        let value = self.invoke(&call, stream, Some(spec.group)).await?;
        let mut parts = Cursor::new(value, "reclaim")?;
        let after = match parts.next_string()?.as_str() {
            "" => None,
            id => Some(reply::parse_id(id)?),
        };
        let mut entries = Vec::new();
        for item in parts
            .next_array("reclaimed entries")?
            .rows("reclaimed entry")
        {
            let mut item = item?;
            let id = item.next_id()?;
            let fields = reply::pairs(item.next_value()?)?;
            let count = item.next_uint()?;
            item.finish()?;
            entries.push(Entry::from_pairs(id, fields).delivered(Delivered::Again(count)));
        }
        let dead = dead_letters(parts.next_array("dead letters")?)?;
        let next_nack_due_ms = match parts.next_string()?.as_str() {
            "" => None,
            // Scores come back as decimal text, possibly in float notation.
            due => due.parse::<f64>().ok().map(|ms| ms as i64),
        };
        parts.finish()?;
        let (dead_lettered, deleted_ids) = self
            .bury(stream, spec.group, spec.dead_letter_stream, dead)
            .await?;
        Ok(Reclaimed {
            entries,
            deleted_ids,
            dead_lettered,
            after,
            next_nack_due_ms,
        })
    }

    /// Moves dead-letter candidates of `group` to `dead_letter_stream` and
    /// acknowledges them (steps 1 and 2 of [`Broker::reclaim`]). Answers the
    /// IDs moved for `max_deliveries` and those found deleted, each only
    /// if this call acknowledged it.
    pub(super) async fn bury(
        &self,
        stream: &str,
        group: &str,
        dead_letter_stream: &str,
        dead: Vec<DeadLetter>,
    ) -> Result<(Vec<StreamId>, Vec<StreamId>)> {
        if dead.is_empty() {
            return Ok((Vec::new(), Vec::new()));
        }
        self.write_dead_letters(stream, group, dead_letter_stream, &dead)
            .await?;
        let ids: Vec<StreamId> = dead.iter().map(|d| d.id).collect();
        let acked = self.ack_each(stream, group, &ids).await?.done;
        let (moved, deleted): (Vec<_>, Vec<_>) = dead
            .into_iter()
            .filter(|d| acked.contains(&d.id))
            .partition(|d| d.reason != "trimmed");
        Ok((
            moved.into_iter().map(|d| d.id).collect(),
            deleted.into_iter().map(|d| d.id).collect(),
        ))
    }

    /// Step 1 of the dead-letter move (see [`Broker::reclaim`]): one
    /// `scripts::DEAD_LETTER` call, all of whose keys carry the dead-letter
    /// stream's key as hash tag.
    async fn write_dead_letters(
        &self,
        stream: &str,
        group: &str,
        dlq: &str,
        dead: &[DeadLetter],
    ) -> Result<()> {
        let mut call = scripts::DEAD_LETTER.key(self.key(dlq));
        call.arg((self.options.dedup_window.as_millis() as u64).max(1));
        for letter in dead {
            let marker = format!("dlq-seen:{stream}:{group}:{}", letter.id);
            call.key(self.aux_key(dlq, &marker));
            let deliveries = letter.deliveries.to_string();
            let id = letter.id.to_string();
            let meta: [(&[u8], &[u8]); 6] = [
                (b"dlq.stream", stream.as_bytes()),
                (b"dlq.id", id.as_bytes()),
                (b"dlq.group", group.as_bytes()),
                (b"dlq.consumer", &letter.owner),
                (b"dlq.deliveries", deliveries.as_bytes()),
                (b"dlq.reason", letter.reason.as_bytes()),
            ];
            call.arg(2 * (meta.len() + letter.fields.len()));
            for (name, value) in meta {
                call.arg(name).arg(value);
            }
            for (name, value) in &letter.fields {
                call.arg(name.as_slice()).arg(value.as_slice());
            }
        }
        self.invoke(&call, dlq, None).await.map(drop)
    }

    /// Schedules entries pending for `consumer` for redelivery at `due_ms`.
    pub async fn nack(
        &self,
        stream: &str,
        group: &str,
        consumer: &str,
        ids: &[StreamId],
        due_ms: i64,
    ) -> Result<Outcome> {
        let mut call = scripts::NACK.key(self.key(stream));
        call.key(self.nack_key(stream, group))
            .arg(group)
            .arg(consumer)
            .arg(due_ms);
        self.per_id(call, stream, group, ids, "nack").await
    }

    /// Resets the idle time of entries pending for `consumer`.
    pub async fn extend(
        &self,
        stream: &str,
        group: &str,
        consumer: &str,
        ids: &[StreamId],
    ) -> Result<Outcome> {
        let mut call = scripts::EXTEND.key(self.key(stream));
        call.arg(group).arg(consumer);
        self.per_id(call, stream, group, ids, "extend").await
    }

    /// Acknowledges entries, saying which were pending in the group (one
    /// script instead of one XACK, which only answers a count).
    pub async fn ack_each(&self, stream: &str, group: &str, ids: &[StreamId]) -> Result<Outcome> {
        let mut call = scripts::ACK_EACH.key(self.key(stream));
        call.arg(group);
        self.per_id(call, stream, group, ids, "ack").await
    }

    /// Runs a script that takes `ids` as its last arguments and answers the
    /// ones it acted on.
    pub(super) async fn per_id(
        &self,
        mut call: redis::ScriptInvocation<'_>,
        stream: &str,
        group: &str,
        ids: &[StreamId],
        what: &'static str,
    ) -> Result<Outcome> {
        for id in ids {
            call.arg(id.to_string());
        }
        let done = reply::ids(self.invoke(&call, stream, Some(group)).await?, what)?;
        Ok(Outcome::split(ids, done))
    }

    /// How many entries are pending for `consumer` (XPENDING summary).
    pub async fn consumer_pending(&self, stream: &str, group: &str, consumer: &str) -> Result<u64> {
        let mut cmd = redis::cmd("XPENDING");
        cmd.arg(self.key(stream)).arg(group);
        let mut summary = Cursor::new(
            self.query(&cmd, stream, Some(group)).await?,
            "XPENDING summary",
        )?;
        // count, lowest ID, highest ID, then per-consumer counts.
        for _ in 0..3 {
            summary.next_value()?;
        }
        let consumers = summary.next_array("XPENDING consumers")?;
        summary.finish()?;
        for row in consumers.rows("XPENDING consumer row") {
            let mut row = row?;
            let (name, count) = (row.next_bytes()?, row.next_uint()?);
            row.finish()?;
            if name == consumer.as_bytes() {
                return Ok(count);
            }
        }
        Ok(0)
    }

    /// The lowest ID some group still needs: its oldest pending entry, or
    /// the entry after its last-delivered ID. `None` when the stream has no
    /// groups. Everything below it is delivered to and acked by every group.
    pub async fn safe_trim_floor(&self, stream: &str) -> Result<Option<StreamId>> {
        let mut floor: Option<StreamId> = None;
        for group in self.list_groups(stream).await? {
            let after_cursor = group.last_delivered_id.successor().unwrap_or(StreamId::MAX);
            let needed = if group.pending > 0 {
                let mut cmd = redis::cmd("XPENDING");
                cmd.arg(self.key(stream))
                    .arg(&group.name)
                    .arg("-")
                    .arg("+")
                    .arg(1);
                let mut rows = Cursor::new(
                    self.query(&cmd, stream, Some(&group.name)).await?,
                    "XPENDING",
                )?;
                let oldest = rows.try_next();
                // COUNT 1: a second row would be a reply of another shape.
                rows.finish()?;
                match oldest {
                    Some(row) => super::admin::pending_row(Cursor::new(row, "XPENDING row")?)?.id,
                    None => after_cursor,
                }
            } else {
                after_cursor
            };
            floor = Some(floor.map_or(needed, |f| f.min(needed)));
        }
        Ok(floor)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ids(list: &[&str]) -> Vec<StreamId> {
        list.iter().map(|s| s.parse().unwrap()).collect()
    }

    #[test]
    fn split_sorts_the_asked_ids_by_what_was_done() {
        let asked = ids(&["1-0", "2-0", "3-0", "2-0", "4-0"]);
        let outcome = Outcome::split(&asked, ids(&["2-0", "4-0"]));
        assert_eq!(outcome.done, ids(&["2-0", "4-0"]));
        assert_eq!(outcome.not_pending, ids(&["1-0", "3-0", "2-0"]));
        let all = Outcome::split(&asked[..3], asked[..3].to_vec());
        assert_eq!((all.done, all.not_pending), (asked[..3].to_vec(), vec![]));
    }
}
