//! The kernel side's count of what its programs could not do (ERRORS, one
//! per-CPU slot per [`ProgramError`]), read like the LOST counter beside it:
//! a program that drops part of its work says so here rather than silently.
use anyhow::Context as _;
use aya::{
    Ebpf,
    maps::{MapData, PerCpuArray},
};
use log::debug;
use watcher_common::{ERRORS_MAP, PROGRAM_ERROR_KINDS, ProgramError};

/// Totals by kind, in [`ProgramError::ALL`]'s order.
pub type ErrorTotals = [(ProgramError, u64); PROGRAM_ERROR_KINDS as usize];

pub struct ProgramErrors {
    map: PerCpuArray<MapData, u64>,
    /// The totals the last [`ProgramErrors::new_since_last`] saw.
    seen: ErrorTotals,
}

impl ProgramErrors {
    /// Takes the ERRORS map from `ebpf` (loaded, before or after attaching).
    pub fn take(ebpf: &mut Ebpf) -> anyhow::Result<Self> {
        let map = ebpf.take_map(ERRORS_MAP).context("map ERRORS missing from the eBPF object")?;
        let map = PerCpuArray::try_from(map).context("opening the ERRORS counter")?;
        Ok(Self { map, seen: ProgramError::ALL.map(|kind| (kind, 0)) })
    }

    /// Errors since the programs were loaded, by kind, summed over CPUs.
    pub fn totals(&self) -> anyhow::Result<ErrorTotals> {
        let mut totals = ProgramError::ALL.map(|kind| (kind, 0));
        for (kind, total) in &mut totals {
            let per_cpu =
                self.map.get(&(*kind as u32), 0).with_context(|| format!("reading ERRORS[{}]", kind.name()))?;
            *total = per_cpu.iter().sum();
        }
        Ok(totals)
    }

    /// The errors counted since the last call (the first: since load), by
    /// kind, only the kinds that grew; each said at debug level.
    pub fn new_since_last(&mut self) -> anyhow::Result<Vec<(ProgramError, u64)>> {
        let totals = self.totals()?;
        let mut grown = Vec::new();
        for ((kind, total), (_, seen)) in totals.iter().zip(&mut self.seen) {
            if total > seen {
                let count = total - *seen;
                debug!("the kernel programs counted {count} errors of kind {} ({total} in all)", kind.name());
                grown.push((*kind, count));
                *seen = *total;
            }
        }
        Ok(grown)
    }
}
