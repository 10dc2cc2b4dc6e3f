//! A cursor over the gRPC framing of a request body: each message is a
//! one-byte compressed flag, a four-byte big-endian length, then that many
//! bytes.
//!
//! The reading layer follows it for two reasons: to know each message's
//! size as soon as its prefix arrives (so the byte budget is charged before
//! the message is let through), and to tell the broken shapes apart by
//! what the bytes say rather than by the text of tonic's errors.

/// Bytes of a message's prefix: the flag and the length.
const PREFIX: usize = 5;

/// A message whose prefix completed in a chunk.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Start {
    /// Where in the chunk its prefix begins (0 when it began in an earlier
    /// chunk): the bytes before belong to messages already under way.
    pub at: usize,
    /// Its size on the wire, prefix included.
    pub size: usize,
}

/// What is wrong with a request body.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Broken {
    /// A message longer than `--max-message-bytes`.
    TooLarge {
        /// The length its prefix declares.
        len: usize,
    },
    /// A compressed-flag byte other than 0: the gateway accepts no
    /// compression, and gRPC defines no value above 1.
    Flag(u8),
    /// The body ended inside a message.
    Truncated {
        /// Bytes of the message (prefix included) that arrived.
        got: usize,
        /// Bytes the message needs (prefix included), when its prefix was
        /// complete.
        want: Option<usize>,
    },
    /// The body of an rpc that takes exactly one message ended without
    /// one.
    Missing,
}

/// Where the cursor is.
#[derive(Debug)]
enum State {
    /// Reading a prefix: `have` of its bytes so far.
    Prefix { bytes: [u8; PREFIX], have: usize },
    /// Reading a message: `left` bytes to go of `len`.
    Message { len: usize, left: usize },
    /// Broken: nothing more is followed.
    Broken,
}

/// The cursor; see the module docs.
#[derive(Debug)]
pub(crate) struct Framing {
    max_message_bytes: usize,
    state: State,
    messages: u64,
}

impl Framing {
    /// A cursor at the start of a body whose messages may have at most
    /// `max_message_bytes` each.
    pub(crate) fn new(max_message_bytes: usize) -> Framing {
        Framing {
            max_message_bytes,
            state: State::Prefix {
                bytes: [0; PREFIX],
                have: 0,
            },
            messages: 0,
        }
    }

    /// Follows one chunk of the body; returns each message whose prefix
    /// completed in it, or what is broken. After a break every chunk is
    /// ignored.
    pub(crate) fn scan(&mut self, chunk: &[u8]) -> Result<Vec<Start>, Broken> {
        let mut started = Vec::new();
        let mut data = chunk;
        while !data.is_empty() {
            match &mut self.state {
                State::Broken => break,
                State::Prefix { bytes, have } => {
                    let at = (chunk.len() - data.len()).saturating_sub(*have);
                    let take = (PREFIX - *have).min(data.len());
                    bytes[*have..*have + take].copy_from_slice(&data[..take]);
                    *have += take;
                    data = &data[take..];
                    if *have < PREFIX {
                        break;
                    }
                    let flag = bytes[0];
                    let len = u32::from_be_bytes([bytes[1], bytes[2], bytes[3], bytes[4]]) as usize;
                    if flag != 0 {
                        return Err(self.broke(Broken::Flag(flag)));
                    }
                    if len > self.max_message_bytes {
                        return Err(self.broke(Broken::TooLarge { len }));
                    }
                    started.push(Start {
                        at,
                        size: PREFIX + len,
                    });
                    self.messages += 1;
                    self.state = State::Message { len, left: len };
                }
                State::Message { left, .. } => {
                    let take = (*left).min(data.len());
                    *left -= take;
                    data = &data[take..];
                }
            }
            if let State::Message { left: 0, .. } = self.state {
                self.state = State::Prefix {
                    bytes: [0; PREFIX],
                    have: 0,
                };
            }
        }
        Ok(started)
    }

    /// What is broken about a body that ended here; `one_message` for an
    /// rpc whose request is exactly one message.
    pub(crate) fn end(&self, one_message: bool) -> Option<Broken> {
        match self.state {
            State::Broken => None,
            State::Prefix { have: 0, .. } if one_message && self.messages == 0 => {
                Some(Broken::Missing)
            }
            State::Prefix { have: 0, .. } => None,
            State::Prefix { have, .. } => Some(Broken::Truncated {
                got: have,
                want: None,
            }),
            State::Message { len, left } => Some(Broken::Truncated {
                got: PREFIX + len - left,
                want: Some(PREFIX + len),
            }),
        }
    }

    fn broke(&mut self, broken: Broken) -> Broken {
        self.state = State::Broken;
        broken
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn message(body: &[u8]) -> Vec<u8> {
        let mut framed = vec![0];
        framed.extend_from_slice(&(body.len() as u32).to_be_bytes());
        framed.extend_from_slice(body);
        framed
    }

    #[test]
    fn sizes_come_as_soon_as_a_prefix_completes_in_any_chunking() {
        let mut body = message(b"hello");
        body.extend(message(b""));
        body.extend(message(&[7; 300]));
        for chunk in [1, 2, 4, 5, 6, 7, 100, body.len()] {
            let mut framing = Framing::new(1000);
            let mut sizes = Vec::new();
            let mut at = 0;
            for part in body.chunks(chunk) {
                for start in framing.scan(part).unwrap() {
                    sizes.push(start.size);
                    // Where the prefix began in the whole body.
                    assert_eq!(at + start.at, [0, 10, 15][sizes.len() - 1].max(at));
                }
                at += part.len();
            }
            assert_eq!(sizes, [10, 5, 305], "chunks of {chunk}");
            assert_eq!(framing.end(true), None);
            assert_eq!(framing.end(false), None);
        }
    }

    #[test]
    fn over_size_and_flags_break_the_body() {
        let mut framing = Framing::new(4);
        assert_eq!(
            framing.scan(&message(b"12345")),
            Err(Broken::TooLarge { len: 5 })
        );
        assert_eq!(
            framing.scan(&message(b"1")),
            Ok(vec![]),
            "ignored after a break"
        );
        assert_eq!(framing.end(true), None);
        for flag in [1, 2, 255] {
            let mut framing = Framing::new(4);
            assert_eq!(framing.scan(&[flag, 0, 0, 0, 0]), Err(Broken::Flag(flag)));
        }
    }

    #[test]
    fn endings_inside_a_message_or_without_one() {
        let mut framing = Framing::new(100);
        assert_eq!(framing.end(true), Some(Broken::Missing));
        assert_eq!(framing.end(false), None, "a stream may carry no message");
        framing.scan(&[0, 0, 0]).unwrap();
        assert_eq!(
            framing.end(false),
            Some(Broken::Truncated { got: 3, want: None })
        );
        framing.scan(&[0, 10, 1, 2]).unwrap();
        assert_eq!(
            framing.end(true),
            Some(Broken::Truncated {
                got: 7,
                want: Some(15)
            })
        );
    }
}
