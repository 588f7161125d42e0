//! Will the model fit? The memory a load needs, against what the host has free.
//!
//! A model that does not fit should be refused before its first byte is read: a load that
//! runs out of memory halfway is killed by the kernel after minutes of work, and takes the
//! rest of the machine's memory with it on the way.

use burn::module::{Module, ModuleVisitor, Param};
use burn::tensor::backend::Backend;
use burn::tensor::quantization::{QuantLevel, QuantParam, QuantStore};
use burn::tensor::{DType, Tensor};

/// What loading a model will take.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MemoryNeed {
    /// The loaded model's tensors.
    pub resident: u64,
    /// The largest copy alive while one tensor is read and converted.
    pub transient: u64,
}

impl MemoryNeed {
    /// The peak of the load.
    pub fn peak(&self) -> u64 {
        self.resident + self.transient
    }
}

/// A load that will not fit.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "the model needs {} of memory ({} resident, {} more while loading), but the host has \
     only {} available",
    gb(need.peak()),
    gb(need.resident),
    gb(need.transient),
    gb(*available)
)]
pub struct OutOfMemory {
    pub need: MemoryNeed,
    pub available: u64,
}

/// Bytes as gigabytes with one decimal (`8.3 GB`).
pub fn gb(bytes: u64) -> String {
    format!("{:.1} GB", bytes as f64 / 1e9)
}

/// Refuses `need` when it exceeds `available`.
pub fn check_fits(need: MemoryNeed, available: u64) -> Result<(), OutOfMemory> {
    if need.peak() > available {
        Err(OutOfMemory { need, available })
    } else {
        Ok(())
    }
}

/// The memory the host can give without swapping (`MemAvailable` of `/proc/meminfo`),
/// lowered to what the process's cgroup (v2) still allows where it sets a limit, as
/// containers do; `None` where neither is known (not Linux).
pub fn host_available() -> Option<u64> {
    let text = std::fs::read_to_string("/proc/meminfo").ok()?;
    let available = parse_mem_available(&text)?;
    Some(match cgroup_headroom() {
        Some(headroom) => available.min(headroom),
        None => available,
    })
}

/// `memory.max - memory.current` of the cgroup v2 the process runs in, when it has a limit.
fn cgroup_headroom() -> Option<u64> {
    let read = |file: &str| std::fs::read_to_string(format!("/sys/fs/cgroup/{file}")).ok();
    let max: u64 = read("memory.max")?.trim().parse().ok()?; // "max" means no limit
    let current: u64 = read("memory.current")?.trim().parse().ok()?;
    Some(max.saturating_sub(current))
}

fn parse_mem_available(meminfo: &str) -> Option<u64> {
    let line = meminfo.lines().find(|l| l.starts_with("MemAvailable:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

/// Whether `B` keeps its tensors in host memory, where [`host_available`] is the budget
/// (autodiff over a CPU backend included). GPU backends hold them in device memory, which
/// burn gives no portable way to query.
pub fn lives_in_host_memory<B: Backend>(device: &B::Device) -> bool {
    let name = B::name(device);
    let mut inner = name.as_str();
    while let Some(wrapped) = inner
        .strip_prefix("autodiff<")
        .and_then(|n| n.strip_suffix('>'))
    {
        inner = wrapped;
    }
    matches!(inner, "flex" | "ndarray")
}

/// The bytes a module's float parameters hold, each in its own dtype.
pub fn resident_bytes<B: Backend, M: Module<B>>(module: &M) -> u64 {
    struct Sum(u64);
    impl<B: Backend> ModuleVisitor<B> for Sum {
        fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<B, D>>) {
            let value = param.val();
            self.0 += stored_bytes(value.dtype(), value.shape().num_elements() as u64);
        }
    }
    let mut sum = Sum(0);
    module.visit(&mut sum);
    sum.0
}

/// Bytes that `numel` values of `dtype` take: the element size for floats; for a
/// block-quantized tensor, its values as stored plus one scale per block. Values stored
/// "natively" take a byte each even at 4 bits, as burn-flex's quantizer leaves them (one
/// `i8` per value); packed values (a loaded q4 base, on every backend) take their bits,
/// rounded up to the packing word.
pub fn stored_bytes(dtype: DType, numel: u64) -> u64 {
    let DType::QFloat(scheme) = dtype else {
        return numel * dtype.size() as u64;
    };
    let values = match scheme.store {
        QuantStore::Native => numel,
        QuantStore::PackedU32(_) | QuantStore::PackedNative(_) => {
            let word = scheme.size_bits_stored() as u64;
            let per_word = word / scheme.size_bits_value() as u64;
            numel.div_ceil(per_word) * word / 8
        }
    };
    let blocks = match scheme.level {
        QuantLevel::Tensor => 1,
        QuantLevel::Block(block) => numel.div_ceil(block.num_elements() as u64),
    };
    let scale_bytes = match scheme.param {
        QuantParam::F32 => 4,
        QuantParam::F16 | QuantParam::BF16 => 2,
        QuantParam::UE8M0 | QuantParam::UE4M3 => 1,
    };
    values + blocks * scale_bytes
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mem_available_is_read_in_bytes() {
        let meminfo =
            "MemTotal:       24576000 kB\nMemFree:  100 kB\nMemAvailable:   20000000 kB\n";
        assert_eq!(parse_mem_available(meminfo), Some(20_000_000 * 1024));
        assert_eq!(parse_mem_available("MemTotal: 1 kB\n"), None);
    }

    #[test]
    fn a_need_past_the_budget_is_refused_with_sizes() {
        let need = MemoryNeed {
            resident: 8_300_000_000,
            transient: 200_000_000,
        };
        assert!(check_fits(need, 9_000_000_000).is_ok());
        let err = check_fits(need, 6_000_000_000).unwrap_err().to_string();
        assert!(
            err.contains("8.5 GB") && err.contains("8.3 GB resident") && err.contains("6.0 GB"),
            "{err}"
        );
    }

    #[test]
    fn resident_bytes_count_each_parameter_in_its_dtype() {
        let device = Default::default();
        let mut layer = crate::Linear::<burn::backend::Flex>::random(8, 4, true, 0.1, &device);
        assert_eq!(resident_bytes(&layer), (8 * 4 + 4) * 4);
        layer.cast_weight(burn::tensor::FloatDType::BF16);
        assert_eq!(resident_bytes(&layer), 8 * 4 * 2 + 4 * 4);
        // A q4 weight as burn-flex quantizes it: one byte per value and an f32 scale per
        // 32 values; packed as a loaded base holds it, half a byte per value.
        let scheme = crate::BaseDtype::Q4
            .resolve::<burn::backend::Flex>(&device)
            .unwrap()
            .quantization
            .unwrap();
        let weight = Tensor::<burn::backend::Flex, 2>::ones([8, 64], &device);
        let unpacked = weight.clone().quantize_dynamic(&scheme);
        let packed = <burn::backend::Flex as crate::MixedMatmul>::quantize_frozen(weight, &scheme);
        let scales = 8 * 64 / 32 * 4;
        let quantized = crate::Linear::from_tensors(unpacked, None);
        assert_eq!(resident_bytes(&quantized), 8 * 64 + scales);
        let packed = crate::Linear::from_tensors(packed, None);
        assert_eq!(resident_bytes(&packed), 8 * 64 / 2 + scales);
    }

    #[test]
    fn flex_is_host_memory() {
        type Flex = burn::backend::Flex;
        let device = Default::default();
        assert!(lives_in_host_memory::<Flex>(&device));
        assert!(lives_in_host_memory::<burn::backend::Autodiff<Flex>>(
            &device
        ));
    }
}
