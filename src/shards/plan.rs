//! The coordinator's plan: which live member should own each shard, moving as few shards as
//! balance needs. Pure and deterministic: two coordinators with the same view plan the same.

use std::collections::BTreeMap;

/// Owners for every shard, given the current owners (an index into `members`, or `None`) and
/// the live members (sorted identities). Every member ends with ⌊N/M⌋ or ⌈N/M⌉ shards; a shard
/// keeps its owner whenever balance allows; the extra shards of ⌈N/M⌉ go to the members that
/// already hold the most (fewest moves), ties broken by identity.
pub fn balance(current: &[Option<usize>], members: usize) -> Vec<Option<usize>> {
    let n = current.len();
    if members == 0 {
        return vec![None; n];
    }
    let mut held: Vec<Vec<usize>> = vec![Vec::new(); members];
    for (s, o) in current.iter().enumerate() {
        if let Some(o) = o.filter(|o| *o < members) {
            held[o].push(s);
        }
    }
    let (base, extra) = (n / members, n % members);
    // Who gets one more: those holding the most now, then by position.
    let mut order: Vec<usize> = (0..members).collect();
    order.sort_by_key(|m| (std::cmp::Reverse(held[*m].len()), *m));
    let mut target = vec![base; members];
    for m in order.into_iter().take(extra) {
        target[m] += 1;
    }
    let mut owner: Vec<Option<usize>> = vec![None; n];
    for (m, shards) in held.iter().enumerate() {
        // Keep the lowest-numbered shards, up to the target.
        for s in shards.iter().take(target[m]) {
            owner[*s] = Some(m);
        }
    }
    let mut count: BTreeMap<usize, usize> = BTreeMap::new();
    for o in owner.iter().flatten() {
        *count.entry(*o).or_default() += 1;
    }
    let mut m = 0;
    for slot in owner.iter_mut().filter(|o| o.is_none()) {
        while count.get(&m).copied().unwrap_or(0) >= target[m] {
            m += 1;
        }
        *slot = Some(m);
        *count.entry(m).or_default() += 1;
    }
    owner
}

#[cfg(test)]
mod tests {
    use super::*;

    fn counts(owner: &[Option<usize>], m: usize) -> Vec<usize> {
        let mut c = vec![0; m];
        for o in owner.iter().flatten() {
            c[*o] += 1;
        }
        c
    }

    fn moved(a: &[Option<usize>], b: &[Option<usize>]) -> usize {
        a.iter()
            .zip(b)
            .filter(|(x, y)| x.is_some() && x != y)
            .count()
    }

    #[test]
    fn cold_start_is_even() {
        let p = balance(&[None; 12], 3);
        assert_eq!(counts(&p, 3), vec![4, 4, 4]);
        let p = balance(&[None; 1024], 16);
        assert!(counts(&p, 16).iter().all(|c| *c == 64));
        let p = balance(&[None; 10], 4);
        let mut c = counts(&p, 4);
        c.sort();
        assert_eq!(c, vec![2, 2, 3, 3]);
    }

    #[test]
    fn a_join_moves_only_what_balance_needs() {
        let three = balance(&[None; 12], 3);
        let four = balance(&three, 4);
        assert_eq!(counts(&four, 4), vec![3, 3, 3, 3]);
        assert_eq!(moved(&three, &four), 3);
        let sixteen = balance(&[None; 1024], 16);
        let seventeen = balance(&sixteen, 17);
        let c = counts(&seventeen, 17);
        assert!(c.iter().all(|c| *c == 60 || *c == 61), "{c:?}");
        // ≈ N/M: 1024/17 = 60.2 shards move to the newcomer, no reshuffle.
        assert_eq!(moved(&sixteen, &seventeen), c[16]);
    }

    #[test]
    fn a_leave_moves_only_the_leavers_shards() {
        let four = balance(&[None; 12], 4);
        // Member 1 leaves: renumber 0,2,3 -> 0,1,2.
        let current: Vec<Option<usize>> = four
            .iter()
            .map(|o| match o {
                Some(1) => None,
                Some(m) if *m > 1 => Some(m - 1),
                o => *o,
            })
            .collect();
        let three = balance(&current, 3);
        assert_eq!(counts(&three, 3), vec![4, 4, 4]);
        assert_eq!(moved(&current, &three), 0);
    }

    #[test]
    fn a_balanced_plan_is_a_fixed_point() {
        for (n, m) in [(12, 3), (10, 4), (1, 5), (4096, 7), (7, 7)] {
            let p = balance(&vec![None; n], m);
            assert_eq!(balance(&p, m), p, "n={n} m={m}");
        }
        assert_eq!(balance(&[Some(0), None], 0), vec![None, None]);
    }
}
