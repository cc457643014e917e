//! The fw_cfg items a `fw-cfg` device serves, from plan values only.

use super::{E820Entry, FwCfgItemPlan, Hex8, MemslotPlan};
use crate::devices::fw_cfg::{self, Inputs};

/// Every item, by key: RAM size is the writable memslots' total, the CPU
/// counts are the vCPUs (APIC IDs are 0..vcpus), the files come from the
/// plan's e820 map.
pub(super) fn items(
    dma: bool,
    vcpus: u32,
    memslots: &[MemslotPlan],
    e820: &[E820Entry],
    cmdline: &str,
) -> Vec<FwCfgItemPlan> {
    let map: Vec<(u64, u64, u32)> = e820.iter().map(|e| (e.addr.0, e.size.0, e.kind.code())).collect();
    let cpus = u16::try_from(vcpus).unwrap_or(u16::MAX);
    let inputs = Inputs {
        ram_size: memslots.iter().filter(|s| !s.readonly).map(|s| s.size.0).sum(),
        cpus,
        max_cpus: cpus,
        cmdline,
        e820: &map,
        dma,
    };
    fw_cfg::items(&inputs)
        .into_iter()
        .map(|i| FwCfgItemPlan {
            key: Hex8(i.key.into()),
            name: i.name,
            size: i.data.len() as u64,
            data: i.data,
        })
        .collect()
}
