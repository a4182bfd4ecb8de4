//! What `--device` asks for and what the code generator knows of a device: plain
//! data, without the OpenCL library, so builds without the `opencl` feature parse
//! `--device` and lower plans for a device description too.

use std::fmt;
use std::str::FromStr;

/// What `--device` asks for.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum DeviceSel {
    /// The first GPU, or else the first device.
    #[default]
    Default,
    /// A device by its position in `fnetc devices`' list (all platforms, in order).
    Index(usize),
    Cpu,
    Gpu,
}

impl FromStr for DeviceSel {
    type Err = String;
    fn from_str(s: &str) -> Result<DeviceSel, String> {
        match s {
            "cpu" => Ok(DeviceSel::Cpu),
            "gpu" => Ok(DeviceSel::Gpu),
            "default" => Ok(DeviceSel::Default),
            n => n
                .parse()
                .map(DeviceSel::Index)
                .map_err(|_| format!("expected a device number, `cpu` or `gpu`, got `{s}`")),
        }
    }
}

/// What the code generator and the program cache need to know about a device.
#[derive(Clone, Debug, PartialEq)]
pub struct DeviceInfoSummary {
    pub index: usize,
    pub name: String,
    pub platform: String,
    pub platform_version: String,
    pub driver_version: String,
    pub is_gpu: bool,
    pub is_cpu: bool,
    pub compute_units: u32,
    pub max_work_group: usize,
    /// Per-axis limits of a work-group (`CL_DEVICE_MAX_WORK_ITEM_SIZES`); NVIDIA's
    /// third axis allows only 64, well under the 1024 items of a whole group.
    pub max_work_items: Vec<usize>,
    /// `CL_DEVICE_NATIVE_VECTOR_WIDTH_FLOAT`: 16 on AVX-512 CPUs, 8 on AVX2.
    pub native_float_width: u32,
}

impl fmt::Display for DeviceInfoSummary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let kind = if self.is_gpu {
            "gpu"
        } else if self.is_cpu {
            "cpu"
        } else {
            "other"
        };
        write!(
            f,
            "{}: {} ({kind}, {} compute units) on {} [driver {}]",
            self.index, self.name, self.compute_units, self.platform, self.driver_version
        )
    }
}
