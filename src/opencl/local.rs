//! Work-group (local) sizes per device, for kernels whose plan leaves them open.
//!
//! - CPUs (PoCL's pthread device): a work-group is one task for a core, and PoCL runs
//!   its work-items as a loop. Groups should be big enough to amortise the task cost
//!   but plentiful enough to balance the cores: the whole of axis 0 (a row of tiles)
//!   times a divisor of axis 1, up to `CPU_ITEMS` work-items, keeping at least
//!   `4 × compute units` groups.
//! - GPUs: 64–256 work-items per group (whole warps/wavefronts), axis 0 first, within
//!   the device's maximum work-group size.
//!
//! Every size divides its grid axis (OpenCL 1.2 has no partial groups) and stays
//! within the device's per-axis limit (`CL_DEVICE_MAX_WORK_ITEM_SIZES`: NVIDIA allows
//! 1024 × 1024 × 64). A grid too small or too awkward for a useful divisor is left to
//! the driver (`None`).
//! `FNET_CL_LOCAL=driver` leaves every size to the driver, for comparisons.

use super::DeviceInfoSummary;

/// Work-items per group aimed at on a CPU.
const CPU_ITEMS: usize = 64;
/// Work-items per group aimed at on a GPU.
const GPU_ITEMS: usize = 128;

/// The largest divisor of `n` that is at most `cap` (1 if none larger).
fn divisor_at_most(n: usize, cap: usize) -> usize {
    (1..=cap.min(n).max(1))
        .rev()
        .find(|d| n.is_multiple_of(*d))
        .unwrap_or(1)
}

/// A local size for a launch over `grid` on `info`'s device, or `None` for the driver's.
pub fn choose(grid: &[usize], info: &DeviceInfoSummary) -> Option<Vec<usize>> {
    if std::env::var("FNET_CL_LOCAL").is_ok_and(|v| v == "driver") {
        return None;
    }
    choose_for(grid, info)
}

/// [`choose`] without the environment override (deterministic, for tests).
pub fn choose_for(grid: &[usize], info: &DeviceInfoSummary) -> Option<Vec<usize>> {
    if grid.is_empty() || grid.contains(&0) {
        return None;
    }
    let max = info.max_work_group.max(1);
    let axis_max = |d: usize| info.max_work_items.get(d).copied().unwrap_or(max).max(1);
    let total: usize = grid.iter().product();
    let mut local = vec![1; grid.len()];
    if info.is_gpu {
        let want = GPU_ITEMS.min(max);
        let mut left = want;
        for (d, (l, &g)) in local.iter_mut().zip(grid).enumerate() {
            *l = divisor_at_most(g, left.min(axis_max(d)));
            left /= *l;
        }
        // Too few items per group (awkward sizes): the driver may do better.
        let items: usize = local.iter().product();
        return (items >= 32 || items == total).then_some(local);
    }
    let groups_wanted = 4 * info.compute_units.max(1) as usize;
    let per_group = (total / groups_wanted).clamp(1, CPU_ITEMS.min(max));
    let mut left = per_group;
    for (d, (l, &g)) in local.iter_mut().zip(grid).enumerate() {
        *l = divisor_at_most(g, left.min(axis_max(d)));
        left /= *l;
        if left <= 1 {
            break;
        }
    }
    Some(local)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn device(gpu: bool, units: u32, max: usize) -> DeviceInfoSummary {
        DeviceInfoSummary {
            index: 0,
            name: "fake".into(),
            platform: "fake".into(),
            platform_version: "OpenCL 1.2".into(),
            driver_version: "1".into(),
            is_gpu: gpu,
            is_cpu: !gpu,
            compute_units: units,
            max_work_group: max,
            // NVIDIA's limits; PoCL allows `max` on every axis.
            max_work_items: if gpu {
                vec![max, max, 64]
            } else {
                vec![max; 3]
            },
            native_float_width: if gpu { 1 } else { 8 },
        }
    }

    fn check(grid: &[usize], local: &[usize], max: usize) {
        assert_eq!(grid.len(), local.len());
        for (d, (g, l)) in grid.iter().zip(local).enumerate() {
            assert!(*l >= 1 && g % l == 0, "{local:?} does not divide {grid:?}");
            assert!(d < 2 || *l <= 64, "{local:?}: axis 2 over NVIDIA's 64");
        }
        assert!(local.iter().product::<usize>() <= max);
    }

    #[test]
    fn gpu_groups_are_whole_warps_that_divide_the_grid() {
        let gpu = device(true, 80, 1024);
        // A conv over 8 tiles × 32 rows × 64·8 channel blocks.
        let l = choose_for(&[8, 32, 512], &gpu).unwrap();
        check(&[8, 32, 512], &l, 1024);
        assert_eq!(l.iter().product::<usize>(), 128);
        assert_eq!(l[0], 8, "axis 0 first");
        let l = choose_for(&[4096], &gpu).unwrap();
        assert_eq!(l, vec![128]);
        // A grid with no useful divisor (131 is prime) is left to the driver, but a
        // small one fits in one group.
        assert_eq!(choose_for(&[131, 2], &gpu), None);
        assert_eq!(choose_for(&[127, 1, 1], &gpu), Some(vec![127, 1, 1]));
        // A device limit below the target is respected.
        let small = device(true, 8, 64);
        let l = choose_for(&[4096, 3], &small).unwrap();
        check(&[4096, 3], &l, 64);
        // The FFT multiply-accumulate's grid (channel blocks, pairs, frequencies):
        // 112 items on axis 2 would divide 1568 but break NVIDIA's per-axis limit
        // (CL_INVALID_KERNEL_ARGS from clEnqueueNDRangeKernel, seen on an H100).
        let l = choose_for(&[1, 1, 1568], &gpu).unwrap();
        check(&[1, 1, 1568], &l, 1024);
        assert_eq!(l, vec![1, 1, 56]);
    }

    #[test]
    fn cpu_groups_leave_several_per_core() {
        let cpu = device(false, 2, 4096);
        let grid = [4, 32, 512];
        let l = choose_for(&grid, &cpu).unwrap();
        check(&grid, &l, CPU_ITEMS);
        let groups: usize = grid.iter().zip(&l).map(|(g, l)| g / l).product();
        assert!(groups >= 8, "{l:?}");
        // A tiny grid gets groups of one item, not one group for both cores.
        assert_eq!(choose_for(&[2, 1, 1], &cpu), Some(vec![1, 1, 1]));
        assert_eq!(choose_for(&[], &cpu), None);
    }
}
