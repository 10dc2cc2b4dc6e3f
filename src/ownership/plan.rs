//! Who should own how many partitions: worked out by each member alone,
//! from the member list every member reads from Redis.
//!
//! Each member's share is `floor(N/M)`, one more for the first `N mod M`
//! members in name order, so the shares always add up to `N`. A member
//! over its share gives partitions up; one under it takes partitions
//! nobody holds. Nobody takes a partition someone holds: that is what
//! keeps one owner per partition (the lease's `SET NX` decides races),
//! and what makes the hand-off cooperative. Members keep what they own as
//! long as it is within their share, so a join or a leave moves only the
//! partitions it must.

/// `me`'s share of `partitions` among `members` (sorted by name); 0 when
/// `me` is not a member.
pub fn share(members: &[String], me: &str, partitions: u32) -> u32 {
    let Some(index) = members.iter().position(|m| m == me) else {
        return 0;
    };
    let count = members.len() as u32;
    partitions / count + u32::from((index as u32) < partitions % count)
}

/// The partitions to give up to get from `owned` down to `share`: the
/// highest-numbered ones.
pub fn surplus(owned: &[u32], share: u32) -> Vec<u32> {
    let mut owned = owned.to_vec();
    owned.sort_unstable();
    owned.split_off((share as usize).min(owned.len()))
}

/// The order in which `me` tries the partitions nobody holds (`free`):
/// from its own place in the ring (member `i` of `M` starts at partition
/// `i * N / M`) onwards, so that members joining together mostly try
/// different partitions first.
pub fn attempts(free: &[u32], members: &[String], me: &str, partitions: u32) -> Vec<u32> {
    let index = members.iter().position(|m| m == me).unwrap_or(0) as u64;
    let count = members.len().max(1) as u64;
    let start = (index * u64::from(partitions) / count) as u32;
    let mut order = free.to_vec();
    order.sort_unstable_by_key(|&p| (p < start, p));
    order
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| (*s).to_owned()).collect()
    }

    #[test]
    fn shares_add_up_to_the_partitions_and_differ_by_one_at_most() {
        for n in 1..40 {
            for m in 1..12 {
                let members: Vec<String> = (0..m).map(|i| format!("c{i:02}")).collect();
                let shares: Vec<u32> = members.iter().map(|c| share(&members, c, n)).collect();
                assert_eq!(shares.iter().sum::<u32>(), n, "{n} over {m}");
                let (lo, hi) = (n / m, n.div_ceil(m));
                assert!(shares.iter().all(|&s| s == lo || s == hi), "{shares:?}");
            }
        }
        assert_eq!(share(&names(&["a", "b"]), "c", 12), 0);
    }

    #[test]
    fn a_member_over_its_share_gives_up_its_highest_partitions() {
        assert_eq!(surplus(&[7, 1, 4, 10], 2), vec![7, 10]);
        assert_eq!(surplus(&[3], 4), Vec::<u32>::new());
    }

    #[test]
    fn members_try_free_partitions_from_their_own_place_in_the_ring() {
        let members = names(&["a", "b", "c"]);
        let free: Vec<u32> = (0..12).collect();
        assert_eq!(attempts(&free, &members, "a", 12)[..2], [0, 1]);
        assert_eq!(attempts(&free, &members, "b", 12)[..2], [4, 5]);
        let c = attempts(&free, &members, "c", 12);
        assert_eq!((c[0], c[4], c.len()), (8, 0, 12));
    }
}
