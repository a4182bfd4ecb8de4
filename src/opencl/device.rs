//! Finding an OpenCL device. The platform count is probed with the raw
//! `clGetPlatformIDs` first: with an ICD loader but no driver, `ocl`'s `Platform`
//! helpers wait for seconds or panic, while the raw call answers at once. Only after a
//! positive probe are `ocl`'s types touched.

use crate::runtime::RunError;
use ocl::enums::{DeviceInfo, DeviceInfoResult};
use ocl::flags::DeviceType;
use ocl::{Device, Platform};
use std::fmt;

pub use super::device_sel::{DeviceInfoSummary, DeviceSel};

fn no_opencl(detail: &str) -> RunError {
    RunError::new(format!("no OpenCL platform is available ({detail})")).hint(
        "install an OpenCL driver: `apt-get install pocl-opencl-icd` for the CPU (PoCL), \
         or your GPU vendor's OpenCL driver; or run with --backend reference",
    )
}

/// The number of OpenCL platforms, by the raw loader call (microseconds, never panics).
pub fn probe_platforms() -> Result<u32, RunError> {
    let mut n: ocl::core::ffi::cl_uint = 0;
    // SAFETY: asking for the count only: no output array, a valid pointer for the count.
    let rc = unsafe { ocl::core::ffi::clGetPlatformIDs(0, std::ptr::null_mut(), &mut n) };
    if rc == -1001 {
        return Err(no_opencl(
            "the ICD loader found no driver: CL_PLATFORM_NOT_FOUND_KHR",
        ));
    }
    if rc != 0 {
        return Err(no_opencl(&format!("clGetPlatformIDs returned {rc}")));
    }
    if n == 0 {
        return Err(no_opencl("the ICD loader lists no platform"));
    }
    Ok(n)
}

fn ocl_err(what: &str, e: impl fmt::Display) -> RunError {
    RunError::new(format!("OpenCL: {what}: {e}"))
}

fn summary(
    index: usize,
    platform: &Platform,
    device: &Device,
) -> Result<DeviceInfoSummary, RunError> {
    let get = |k: DeviceInfo| device.info(k).map_err(|e| ocl_err("device query", e));
    let kind = match get(DeviceInfo::Type)? {
        DeviceInfoResult::Type(t) => t,
        _ => DeviceType::empty(),
    };
    let compute_units = match get(DeviceInfo::MaxComputeUnits)? {
        DeviceInfoResult::MaxComputeUnits(n) => n,
        _ => 1,
    };
    let max_work_group = match get(DeviceInfo::MaxWorkGroupSize)? {
        DeviceInfoResult::MaxWorkGroupSize(n) => n,
        _ => 1,
    };
    let max_work_items = match get(DeviceInfo::MaxWorkItemSizes)? {
        DeviceInfoResult::MaxWorkItemSizes(v) => v,
        _ => Vec::new(),
    };
    let native_float_width = match get(DeviceInfo::NativeVectorWidthFloat)? {
        DeviceInfoResult::NativeVectorWidthFloat(n) => n,
        _ => 1,
    };
    Ok(DeviceInfoSummary {
        index,
        name: device.name().map_err(|e| ocl_err("device name", e))?,
        platform: platform.name().map_err(|e| ocl_err("platform name", e))?,
        platform_version: platform
            .version()
            .map_err(|e| ocl_err("platform version", e))?,
        driver_version: get(DeviceInfo::DriverVersion)?.to_string(),
        is_gpu: kind.contains(DeviceType::GPU),
        is_cpu: kind.contains(DeviceType::CPU),
        compute_units,
        max_work_group,
        max_work_items,
        native_float_width,
    })
}

/// Every device of every platform, in a stable order.
pub fn list_devices() -> Result<Vec<(Platform, Device, DeviceInfoSummary)>, RunError> {
    probe_platforms()?;
    let ids = ocl::core::get_platform_ids().map_err(|e| no_opencl(&e.to_string()))?;
    let mut out = Vec::new();
    for id in ids {
        let platform = Platform::new(id);
        // A platform without devices of any type is not an error, just empty.
        let devices = Device::list(platform, Some(DeviceType::ALL)).unwrap_or_default();
        for device in devices {
            let s = summary(out.len(), &platform, &device)?;
            out.push((platform, device, s));
        }
    }
    if out.is_empty() {
        return Err(no_opencl("the platforms have no devices"));
    }
    Ok(out)
}

/// The device `sel` names.
pub fn select(sel: DeviceSel) -> Result<(Platform, Device, DeviceInfoSummary), RunError> {
    let all = list_devices()?;
    let names = || {
        all.iter()
            .map(|(_, _, s)| s.to_string())
            .collect::<Vec<_>>()
            .join("; ")
    };
    let found = match sel {
        DeviceSel::Index(i) => all.get(i),
        DeviceSel::Cpu => all.iter().find(|d| d.2.is_cpu),
        DeviceSel::Gpu => all.iter().find(|d| d.2.is_gpu),
        DeviceSel::Default => all.iter().find(|d| d.2.is_gpu).or(all.first()),
    };
    found.cloned().ok_or_else(|| {
        let what = match sel {
            DeviceSel::Index(i) => format!("no OpenCL device {i}"),
            DeviceSel::Cpu => "no OpenCL CPU device".to_string(),
            DeviceSel::Gpu => "no OpenCL GPU device".to_string(),
            DeviceSel::Default => "no OpenCL device".to_string(),
        };
        RunError::new(format!("{what}; the devices are: {}", names()))
            .hint("pick one with --device N, --device cpu or --device gpu")
    })
}

/// `fnetc devices`: one row per device, numbered as `--device N` takes them.
pub fn device_table() -> Result<String, RunError> {
    let rows: Vec<[String; 5]> = list_devices()?
        .into_iter()
        .map(|(_, _, d)| {
            let kind = match (d.is_gpu, d.is_cpu) {
                (true, _) => "gpu",
                (_, true) => "cpu",
                _ => "other",
            };
            [
                d.index.to_string(),
                kind.to_string(),
                d.compute_units.to_string(),
                d.driver_version,
                format!("{} ({})", d.name, d.platform),
            ]
        })
        .collect();
    let head = [
        "index",
        "type",
        "compute units",
        "driver",
        "device (platform)",
    ];
    let width = |c: usize| {
        rows.iter()
            .map(|r| r[c].len())
            .fold(head[c].len(), usize::max)
    };
    let line = |r: [&str; 5]| {
        let cells: Vec<String> = (0..4)
            .map(|c| format!("{:<w$}", r[c], w = width(c)))
            .collect();
        format!("{}  {}\n", cells.join("  "), r[4])
    };
    let mut out = line(head);
    for r in &rows {
        out += &line([&r[0], &r[1], &r[2], &r[3], &r[4]]);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_device_selectors() {
        assert_eq!("cpu".parse(), Ok(DeviceSel::Cpu));
        assert_eq!("gpu".parse(), Ok(DeviceSel::Gpu));
        assert_eq!("2".parse(), Ok(DeviceSel::Index(2)));
        assert!("fast".parse::<DeviceSel>().is_err());
    }
}
