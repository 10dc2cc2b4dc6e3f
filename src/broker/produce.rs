//! Produce: appending events, plainly (pipelined XADDs) or deduplicated
//! by idempotency key (one script), and, with `--produce-wait-replicas`,
//! only counted once replicas hold them (see [`super::durable`]).

use redis::{RedisError, Value};

use super::reply::{self, Cursor};
use super::{Broker, Cap, checked, now_ms, scripts};
use crate::error::{Error, Result};
use crate::model::{Event, KEY_FIELD, TS_FIELD, TYPE_FIELD};

impl Broker {
    /// Appends events in one pipelined round trip and returns their IDs in
    /// order. Every entry gets the same `ts_ms`: the gateway's clock when
    /// the batch arrived. Events with idempotency keys go through one
    /// atomic script (see `scripts::PRODUCE_IDEMPOTENT`). With
    /// `--produce-wait-replicas` the answer waits for the replicas (see
    /// [`super::durable`]).
    ///
    /// Takes the events by value and drops them once the commands hold
    /// their bytes: while Redis is slow, every request waiting for its
    /// answer would otherwise sit in memory twice.
    pub async fn produce(
        &self,
        stream: &str,
        events: Vec<Event>,
        cap: Option<Cap>,
    ) -> Result<Vec<String>> {
        let ts = now_ms().to_string();
        let mut pipe = redis::pipe();
        pipe.ignore_errors();
        let idempotent = events.iter().any(|e| !e.idempotency_key.is_empty());
        if idempotent {
            self.push_idempotent(&mut pipe, stream, &events, cap, &ts);
        } else {
            self.push_xadds(&mut pipe, stream, &events, cap, &ts);
        }
        drop(events);
        let script = idempotent.then_some(&*scripts::PRODUCE_IDEMPOTENT);
        let (replies, replicated) = self.write(pipe, stream, script).await?;
        let replies = checked(replies, stream, None)?;
        replicated?;
        if idempotent {
            let ids = replies.into_iter().next().unwrap_or(Value::Nil);
            return Cursor::new(ids, "produce ids")?.map(|v| reply::string(v, "XADD id"));
        }
        ids(replies)
    }

    /// Appends the events of several requests to one stream in one
    /// pipelined round trip (ProduceStream's requests that arrived
    /// together): each request's IDs, or its own error, in request order.
    /// For events without idempotency keys only. Fails as a whole only when
    /// nothing could be sent. Drops the events once the commands hold
    /// them, as [`Broker::produce`] does.
    pub async fn produce_many(
        &self,
        stream: &str,
        requests: Vec<(Vec<Event>, Option<Cap>)>,
    ) -> Result<Vec<Result<Vec<String>>>> {
        let ts = now_ms().to_string();
        let mut pipe = redis::pipe();
        pipe.ignore_errors();
        let mut counts = Vec::with_capacity(requests.len());
        for (events, cap) in requests {
            debug_assert!(events.iter().all(|e| e.idempotency_key.is_empty()));
            self.push_xadds(&mut pipe, stream, &events, cap, &ts);
            counts.push(events.len());
        }
        let (replies, replicated) = self.write(pipe, stream, None).await?;
        let mut replies = replies.into_iter();
        Ok(counts
            .into_iter()
            .map(|count| {
                let own = replies.by_ref().take(count).collect();
                let own = checked(own, stream, None)?;
                replicated.clone()?;
                ids(own)
            })
            .collect())
    }

    /// One XADD per event.
    fn push_xadds(
        &self,
        pipe: &mut redis::Pipeline,
        stream: &str,
        events: &[Event],
        cap: Option<Cap>,
        ts: &str,
    ) {
        let key = self.key(stream);
        for event in events {
            let mut cmd = sized_command(event, 6, key.len() + 32);
            cmd.arg("XADD").arg(&key);
            if let Some(cap) = cap {
                cmd.arg("MAXLEN")
                    .arg(if cap.exact { "=" } else { "~" })
                    .arg(cap.max_len);
            }
            write_event(cmd.arg("*"), event, ts);
            pipe.add_command(cmd);
        }
    }

    /// One EVALSHA of `scripts::PRODUCE_IDEMPOTENT` for all events, which
    /// skips those whose idempotency key is remembered.
    fn push_idempotent(
        &self,
        pipe: &mut redis::Pipeline,
        stream: &str,
        events: &[Event],
        cap: Option<Cap>,
        ts: &str,
    ) {
        let keyed = events.iter().filter(|e| !e.idempotency_key.is_empty());
        let bytes: usize = events
            .iter()
            .map(|e| {
                e.fields
                    .iter()
                    .map(|(n, v)| n.len() + v.len())
                    .sum::<usize>()
                    + reserved_bytes(e)
                    + 32
            })
            .sum();
        let args: usize = events
            .iter()
            .map(|e| 2 + 2 * (e.fields.len() + reserved_fields(e)))
            .sum();
        let mut call = redis::Cmd::with_capacity(args + 8, bytes + 128);
        call.arg("EVALSHA")
            .arg(scripts::PRODUCE_IDEMPOTENT.get_hash())
            .arg(1 + keyed.clone().count())
            .arg(self.key(stream));
        for event in keyed {
            call.arg(self.aux_key(stream, &format!("idem:{}", event.idempotency_key)));
        }
        match cap {
            Some(cap) => call.arg(if cap.exact { "=" } else { "~" }).arg(cap.max_len),
            None => call.arg("").arg(0),
        };
        call.arg(self.options.dedup_window.as_millis() as u64);
        // Duplicates must write something the replicas' WAIT can see.
        call.arg(if self.durable.is_some() { "1" } else { "0" });
        for event in events {
            call.arg(if event.idempotency_key.is_empty() {
                "0"
            } else {
                "1"
            });
            call.arg(2 * (event.fields.len() + reserved_fields(event)));
            write_event(&mut call, event, ts);
        }
        pipe.add_command(call);
    }

    /// Sends a pipeline of writes to `stream` and returns its replies (each
    /// may be an error) and whether enough replicas confirmed them (always
    /// Ok unless writes wait for replicas: then the pipeline ends with WAIT
    /// and goes on the durable connections). A pipeline calling `script` by
    /// hash loads it and goes again when Redis does not know it yet: only
    /// for a pipeline that is that one call, so that nothing ran.
    async fn write(
        &self,
        mut pipe: redis::Pipeline,
        stream: &str,
        script: Option<&redis::Script>,
    ) -> Result<(Vec<Value>, Result<()>)> {
        let failed = |e: RedisError| Error::from_redis(&e, stream, None);
        let mut link = self.conn().await?;
        if let Some(durable) = &self.durable {
            durable.wait_after(&mut pipe);
        }
        let mut loaded = false;
        loop {
            let mut replies: Vec<Value> = match &self.durable {
                None => pipe.query_async(&mut link).await,
                Some(durable) => pipe.query_async(&mut durable.link().await?).await,
            }
            .map_err(failed)?;
            let wait = self
                .durable
                .as_ref()
                .map(|_| replies.pop().unwrap_or(Value::Nil));
            let unknown_script = replies
                .iter()
                .any(|v| matches!(v, Value::ServerError(e) if e.code() == "NOSCRIPT"));
            if let (Some(script), true, false) = (script, unknown_script, loaded) {
                script.load_async(&mut link).await.map_err(failed)?;
                loaded = true;
                continue;
            }
            let replicated = match (&self.durable, wait) {
                (Some(durable), Some(wait)) => durable.check(wait),
                _ => Ok(()),
            };
            return Ok((replies, replicated));
        }
    }
}

/// XADD replies as the IDs they are. The IDs go back to the client as
/// Redis wrote them: parsing them would only cost time on the hottest path.
fn ids(replies: Vec<Value>) -> Result<Vec<String>> {
    replies
        .into_iter()
        .map(|v| reply::string(v, "XADD id"))
        .collect()
}

/// A command with room for `event`'s fields and `other_args` arguments of
/// `other_bytes` in all, allocated once: grown argument by argument, its
/// buffer would double past a large value and hold up to twice the
/// event's bytes while the command waits for Redis.
fn sized_command(event: &Event, other_args: usize, other_bytes: usize) -> redis::Cmd {
    let fields: usize = event.fields.iter().map(|(n, v)| n.len() + v.len()).sum();
    redis::Cmd::with_capacity(
        other_args + 2 * (event.fields.len() + reserved_fields(event)),
        other_bytes + reserved_bytes(event) + fields,
    )
}

/// How many reserved fields [`write_event`] writes for `event`: `ts_ms`
/// always, `type` and `partition_key` when set.
fn reserved_fields(event: &Event) -> usize {
    1 + usize::from(!event.event_type.is_empty()) + usize::from(!event.key.is_empty())
}

/// The bytes of the reserved fields' names and values, at most.
fn reserved_bytes(event: &Event) -> usize {
    TYPE_FIELD.len()
        + event.event_type.len()
        + TS_FIELD.len()
        + 20
        + KEY_FIELD.len()
        + event.key.len()
}

/// Appends to `cmd` an entry's field/value pairs as stored: `type` (when
/// set), `ts_ms`, `partition_key` (when set), then the event's own fields.
fn write_event(cmd: &mut redis::Cmd, event: &Event, ts: &str) {
    if !event.event_type.is_empty() {
        cmd.arg(TYPE_FIELD).arg(&event.event_type);
    }
    cmd.arg(TS_FIELD).arg(ts);
    if !event.key.is_empty() {
        cmd.arg(KEY_FIELD).arg(&event.key);
    }
    for (name, value) in &event.fields {
        cmd.arg(name).arg(value);
    }
}
