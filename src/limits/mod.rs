//! Request limits beyond the per-field bounds the handlers check
//! themselves (`--max-batch-size`, `--max-produce-events`): the size of one
//! event, how every request is read (one gRPC message's size, broken
//! messages, the bytes held for calls not yet answered), and how many
//! long-lived streams a connection and the whole gateway may hold open.
//! Each refusal names the limit and its flag.

mod budget;
mod reading;
mod subscriptions;

pub(crate) use budget::{BudgetMetrics, ByteBudget};
pub use reading::{Answers, ReadingLayer};
pub use subscriptions::SubscriptionSlots;

use crate::error::{Error, Result};
use crate::model::{Event, KEY_FIELD, TYPE_FIELD};

/// Bounds on one produced event.
#[derive(Clone, Copy, Debug)]
pub struct EventLimits {
    /// Most user fields (text and binary together) in one event.
    pub max_fields: usize,
    /// Most bytes of one field, name plus value. The event type counts as
    /// the field `type`, a partition key as the field `partition_key`; an
    /// idempotency key counts as a value.
    pub max_field_bytes: usize,
}

impl EventLimits {
    /// Checks the `index`-th event of a Produce request.
    pub fn check(&self, index: usize, event: &Event) -> Result<()> {
        if event.fields.len() > self.max_fields {
            return Err(Error::LimitExceeded(format!(
                "events[{index}] has {} fields; the limit is {} (--max-event-fields)",
                event.fields.len(),
                self.max_fields
            )));
        }
        let type_field = (TYPE_FIELD, event.event_type.len());
        // An event without a key stores no `partition_key` field.
        let key_field = (!event.key.is_empty()).then_some((KEY_FIELD, event.key.len()));
        let idempotency = ("idempotency_key", event.idempotency_key.len());
        let fields = event.fields.iter().map(|(n, v)| (n.as_str(), v.len()));
        for (name, value_len) in fields.chain([type_field]).chain(key_field) {
            let bytes = name.len() + value_len;
            if bytes > self.max_field_bytes {
                return Err(self.field_too_large(index, name, bytes));
            }
        }
        if idempotency.1 > self.max_field_bytes {
            return Err(self.field_too_large(index, idempotency.0, idempotency.1));
        }
        Ok(())
    }

    fn field_too_large(&self, index: usize, name: &str, bytes: usize) -> Error {
        Error::LimitExceeded(format!(
            "events[{index}] field {:?} has {bytes} bytes (name + value); the limit is {} \
             (--max-field-bytes)",
            shorten(name),
            self.max_field_bytes
        ))
    }
}

/// A field name short enough for an error message.
fn shorten(name: &str) -> String {
    const SHOWN: usize = 40;
    match name.char_indices().nth(SHOWN) {
        Some((cut, _)) => format!("{}...", &name[..cut]),
        None => name.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tonic::Code;

    const LIMITS: EventLimits = EventLimits {
        max_fields: 2,
        max_field_bytes: 10,
    };

    fn event(fields: &[(&str, &str)]) -> Event {
        Event {
            event_type: "t".into(),
            fields: fields
                .iter()
                .map(|(n, v)| (n.to_string(), v.as_bytes().to_vec()))
                .collect(),
            idempotency_key: String::new(),
            key: String::new(),
        }
    }

    fn refused(event: &Event) -> String {
        let err = LIMITS.check(3, event).unwrap_err();
        assert_eq!(err.code(), Code::ResourceExhausted);
        err.to_string()
    }

    #[test]
    fn events_within_the_limits_pass() {
        assert!(
            LIMITS
                .check(0, &event(&[("a", "123456789"), ("b", "")]))
                .is_ok()
        );
    }

    #[test]
    fn too_many_fields_name_the_event_and_flag() {
        let msg = refused(&event(&[("a", ""), ("b", ""), ("c", "")]));
        assert!(
            msg.contains("events[3]") && msg.contains("--max-event-fields"),
            "{msg}"
        );
    }

    #[test]
    fn name_plus_value_counts_and_names_the_field() {
        let msg = refused(&event(&[("ab", "123456789")]));
        assert!(msg.contains("\"ab\"") && msg.contains("11 bytes"), "{msg}");
        assert!(msg.contains("--max-field-bytes"), "{msg}");
        let mut typed = event(&[]);
        typed.event_type = "1234567".into();
        assert!(refused(&typed).contains("\"type\""));
        let mut partitioned = event(&[]);
        partitioned.key = "k".into();
        assert!(refused(&partitioned).contains("\"partition_key\""));
        let mut keyed = event(&[]);
        keyed.idempotency_key = "x".repeat(11);
        assert!(refused(&keyed).contains("idempotency_key"));
    }

    #[test]
    fn long_names_are_shortened_in_messages() {
        let long = "n".repeat(1000);
        assert_eq!(shorten(&long).len(), 43);
        assert_eq!(shorten("\u{e9}\u{e9}"), "\u{e9}\u{e9}");
    }
}
