//! Storage slots for a plan's temporaries: each `Temp` buffer a launch reads or writes
//! gets a slot (one device allocation), shared by buffers whose lifetimes do not
//! overlap, so a step's device memory is the sum of the slots' lengths.
//!
//! A buffer lives from its first launch to its last (outputs and running-statistic
//! updates, read after the run, to the end). The assignment is greedy by size, the
//! offline shared-object planner of TFLite's memory planner: buffers are placed
//! largest first, each into the smallest existing slot none of whose buffers it
//! overlaps, else into a new slot of its length. Every slot is then at least as long
//! as any later buffer, so no slot ever grows, and a large buffer is never refused
//! because smaller ones took the free slots first. The earlier first-fit-in-launch-order
//! assignment allocated ResNet-20's training step at batch 64 into 210 MiB of slots for
//! 142 MiB of temporaries live at once; this one into 144 MiB (docs/performance.md).

use super::{BufKind, Plan};

/// Each temporary's lifetime `(first, last)` in launch order, `None` for buffers no
/// launch reads or writes. Outputs and updates live to `steps.len()`.
fn lifetimes(plan: &Plan) -> Vec<Option<(usize, usize)>> {
    let mut life: Vec<Option<(usize, usize)>> = vec![None; plan.buffers.len()];
    for (i, s) in plan.steps.iter().enumerate() {
        for &a in &s.args {
            let l = life[a].get_or_insert((i, i));
            l.1 = i;
        }
    }
    let end = plan.steps.len();
    for &o in (plan.outputs.iter().map(|(o, _)| o)).chain(plan.updates.iter().map(|(u, _)| u)) {
        if let Some(l) = &mut life[o] {
            l.1 = end;
        }
    }
    for (l, b) in life.iter_mut().zip(&plan.buffers) {
        if b.kind != BufKind::Temp {
            *l = None;
        }
    }
    life
}

/// Gives each temporary buffer a storage slot (`plan.slot`, `plan.slot_len`), sharing
/// slots between buffers whose lifetimes do not overlap.
pub(super) fn assign_slots(plan: &mut Plan) {
    let life = lifetimes(plan);
    let mut order: Vec<usize> = (0..plan.buffers.len())
        .filter(|&b| life[b].is_some())
        .collect();
    // Largest first; ties in launch order, so the plan is deterministic.
    order.sort_by_key(|&b| (std::cmp::Reverse(plan.buffers[b].len), life[b]));
    plan.slot = vec![None; plan.buffers.len()];
    plan.slot_len = Vec::new();
    // The lifetimes each slot holds, kept sorted by start.
    let mut held: Vec<Vec<(usize, usize)>> = Vec::new();
    for b in order {
        let (first, last) = life[b].expect("filtered");
        let free = |spans: &Vec<(usize, usize)>| {
            // The first span ending at or after `first` must start after `last`.
            let k = spans.partition_point(|&(_, e)| e < first);
            spans.get(k).is_none_or(|&(s, _)| s > last)
        };
        let slot = (0..held.len())
            .filter(|&s| free(&held[s]))
            .min_by_key(|&s| plan.slot_len[s]);
        let slot = slot.unwrap_or_else(|| {
            held.push(Vec::new());
            plan.slot_len.push(plan.buffers[b].len);
            held.len() - 1
        });
        let spans = &mut held[slot];
        let at = spans.partition_point(|&(s, _)| s < first);
        spans.insert(at, (first, last));
        plan.slot[b] = Some(slot);
    }
}

/// The largest total length of temporaries live at once: the least any slot
/// assignment of this launch order can allocate.
pub fn live_peak(plan: &Plan) -> usize {
    let life = lifetimes(plan);
    let mut delta = vec![0isize; plan.steps.len() + 2];
    for (l, b) in life.iter().zip(&plan.buffers) {
        if let Some((first, last)) = *l {
            delta[first] += b.len as isize;
            delta[last + 1] -= b.len as isize;
        }
    }
    let (mut live, mut peak) = (0isize, 0isize);
    for d in delta {
        live += d;
        peak = peak.max(live);
    }
    peak as usize
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernel_ir::plan::{Buffer, Step};

    /// A plan of temporaries with these lengths, launch `i` touching `steps[i]`.
    fn plan(lens: &[usize], steps: &[&[usize]]) -> Plan {
        Plan {
            buffers: lens
                .iter()
                .map(|&len| Buffer {
                    len,
                    kind: BufKind::Temp,
                })
                .collect(),
            steps: steps
                .iter()
                .map(|a| Step {
                    kernel: 0,
                    native: None,
                    args: a.to_vec(),
                    layer: String::new(),
                })
                .collect(),
            ..Plan::default()
        }
    }

    /// No two buffers in one slot overlap, and every slot holds its buffers.
    fn check(p: &Plan) {
        let life = lifetimes(p);
        for a in 0..p.buffers.len() {
            let Some(sa) = p.slot[a] else { continue };
            assert!(
                p.slot_len[sa] >= p.buffers[a].len,
                "buffer {a} fits slot {sa}"
            );
            for b in a + 1..p.buffers.len() {
                if p.slot[b] == Some(sa) {
                    let ((f1, l1), (f2, l2)) = (life[a].unwrap(), life[b].unwrap());
                    assert!(l1 < f2 || l2 < f1, "buffers {a} and {b} share slot {sa}");
                }
            }
        }
    }

    #[test]
    fn a_chain_reuses_two_slots() {
        // 0 → 1 → 2 → 3: each launch reads one buffer and writes the next.
        let mut p = plan(&[10, 10, 10, 10], &[&[0, 1], &[1, 2], &[2, 3]]);
        assign_slots(&mut p);
        check(&p);
        assert_eq!(p.slot_len.iter().sum::<usize>(), 20);
        assert_eq!(live_peak(&p), 20);
    }

    #[test]
    fn a_large_late_buffer_takes_the_freed_small_ones_place() {
        // A small buffer dies before a large one is born. First fit in launch order
        // gave the small one a slot of 1 that the large one could not use (101 in
        // all); largest first puts both in one slot of 100.
        let mut p = plan(&[1, 100, 3], &[&[0, 2], &[1, 2]]);
        assign_slots(&mut p);
        check(&p);
        assert_eq!(p.slot[0], p.slot[1]);
        assert_eq!(live_peak(&p), 103);
        assert_eq!(p.slot_len.iter().sum::<usize>(), 103);
    }

    #[test]
    fn outputs_live_to_the_end_and_other_kinds_get_no_slot() {
        let mut p = plan(&[5, 5, 5], &[&[0, 1], &[1, 2]]);
        p.outputs.push((0, vec![5]));
        p.buffers[2].kind = BufKind::Input(0);
        assign_slots(&mut p);
        check(&p);
        assert_eq!(p.slot[2], None);
        assert_ne!(p.slot[0], p.slot[1]);
        assert_eq!(live_peak(&p), 10);
    }
}
