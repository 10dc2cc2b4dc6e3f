//! Where a cluster's slots live, from `CLUSTER SLOTS`: which master serves
//! a key (so a scenario can spread its streams over every master), and the
//! address of every node (so the probes can count connections and CPU on
//! all of them, replicas included).

use redis::Value;
use redis::aio::MultiplexedConnection;

use crate::Fallible;

/// A node's `host:port`.
pub type Addr = (String, u16);

/// One slot range and the nodes serving it, master first.
#[derive(Clone, Debug)]
pub struct SlotRange {
    pub first: u16,
    pub last: u16,
    pub nodes: Vec<Addr>,
}

/// The cluster's slot ranges, asked of the node behind `conn`.
pub async fn slot_ranges(conn: &mut MultiplexedConnection) -> Fallible<Vec<SlotRange>> {
    let reply: Value = redis::cmd("CLUSTER").arg("SLOTS").query_async(conn).await?;
    let bad = || "malformed CLUSTER SLOTS reply";
    let Value::Array(ranges) = reply else {
        return Err(bad().into());
    };
    let mut out = Vec::with_capacity(ranges.len());
    for range in ranges {
        let Value::Array(parts) = range else {
            return Err(bad().into());
        };
        if parts.len() < 3 {
            return Err(bad().into());
        }
        let first = redis::from_redis_value_ref(&parts[0])?;
        let last = redis::from_redis_value_ref(&parts[1])?;
        let mut nodes = Vec::new();
        for node in &parts[2..] {
            let Value::Array(node) = node else {
                return Err(bad().into());
            };
            if node.len() < 2 {
                return Err(bad().into());
            }
            nodes.push((
                redis::from_redis_value_ref(&node[0])?,
                redis::from_redis_value_ref(&node[1])?,
            ));
        }
        out.push(SlotRange { first, last, nodes });
    }
    out.sort_by_key(|r| r.first);
    Ok(out)
}

/// The distinct masters, in slot order.
pub fn masters(ranges: &[SlotRange]) -> Vec<Addr> {
    let mut out: Vec<Addr> = Vec::new();
    for range in ranges {
        if let Some(master) = range.nodes.first()
            && !out.contains(master)
        {
            out.push(master.clone());
        }
    }
    out
}

/// Every node serving some slot, masters and replicas.
pub fn all_nodes(ranges: &[SlotRange]) -> Vec<Addr> {
    let mut out: Vec<Addr> = Vec::new();
    for node in ranges.iter().flat_map(|r| &r.nodes) {
        if !out.contains(node) {
            out.push(node.clone());
        }
    }
    out
}

/// The cluster slot of a key, as Redis computes it (`CLUSTER KEYSLOT`):
/// CRC16/XMODEM of the key, or of its hash tag (what lies between the
/// first `{` and the next `}`, when not empty), modulo 16384. The bench
/// computes it itself, as any cluster client does: asking Redis would cost
/// a round trip per candidate stream name, and redis-rs keeps its own
/// computation internal.
pub fn slot_of(key: &[u8]) -> u16 {
    let hashed = key
        .iter()
        .position(|&b| b == b'{')
        .and_then(|open| {
            let tag = &key[open + 1..];
            let len = tag.iter().position(|&b| b == b'}')?;
            (len > 0).then(|| &tag[..len])
        })
        .unwrap_or(key);
    let mut crc: u16 = 0;
    for &byte in hashed {
        crc ^= u16::from(byte) << 8;
        for _ in 0..8 {
            crc = if crc & 0x8000 != 0 {
                (crc << 1) ^ 0x1021
            } else {
                crc << 1
            };
        }
    }
    crc % 16384
}

/// The master serving `slot`.
pub fn master_of(ranges: &[SlotRange], slot: u16) -> Option<&Addr> {
    ranges
        .iter()
        .find(|r| (r.first..=r.last).contains(&slot))
        .and_then(|r| r.nodes.first())
}

/// `seed` (a `redis://[user:pass@]host:port[/db]` URL) with its host and
/// port replaced by `addr`'s: a node reached with the seed's credentials.
pub fn node_url(seed: &str, addr: &Addr) -> String {
    let (scheme, rest) = seed.split_once("://").unwrap_or(("redis", seed));
    let (authority, tail) = match rest.find(['/', '?']) {
        Some(i) => rest.split_at(i),
        None => (rest, ""),
    };
    let userinfo = authority.rfind('@').map_or("", |i| &authority[..=i]);
    let host = if addr.0.contains(':') {
        format!("[{}]", addr.0)
    } else {
        addr.0.clone()
    };
    format!("{scheme}://{userinfo}{host}:{}{tail}", addr.1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_are_the_ones_redis_computes() {
        // What CLUSTER KEYSLOT answers.
        assert_eq!(slot_of(b"foo"), 12182);
        assert_eq!(slot_of(b"bar"), 5061);
        // The check value of CRC16/XMODEM.
        assert_eq!(slot_of(b"123456789"), 0x31C3);
        // Hash tags: only the first {...}, and only when not empty.
        assert_eq!(slot_of(b"{user1000}.following"), slot_of(b"user1000"));
        assert_eq!(slot_of(b"x{bar}{foo}"), slot_of(b"bar"));
        assert_ne!(slot_of(b"foo{}{bar}"), slot_of(b"bar"));
        assert_eq!(slot_of(b"p:{p:orders}:nack:g"), slot_of(b"p:orders"));
    }
}
