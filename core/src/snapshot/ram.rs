//! The RAM section: for each RAM region of the machine section, in order, the number of
//! pages that are not all zero (u64), then each such page as its index in the region
//! (u64, strictly increasing) and its 4096 bytes. Pages not listed are zero.

use super::SnapshotError;
use crate::mmu::memory::GuestMemory;
use alloc::vec::Vec;

const PAGE: usize = 4096;

fn is_zero(page: &[u8]) -> bool {
    page.chunks_exact(8)
        .all(|w| u64::from_le_bytes([w[0], w[1], w[2], w[3], w[4], w[5], w[6], w[7]]) == 0)
}

/// Bytes [`encode`] writes for `mem`.
pub(super) fn encoded_len(mem: &GuestMemory) -> usize {
    mem.regions()
        .iter()
        .map(|r| 8 + r.bytes().chunks_exact(PAGE).filter(|p| !is_zero(p)).count() * (8 + PAGE))
        .sum()
}

/// Append the section body for `mem`.
pub(super) fn encode(mem: &GuestMemory, out: &mut Vec<u8>) {
    for r in mem.regions() {
        let count = r.bytes().chunks_exact(PAGE).filter(|p| !is_zero(p)).count();
        out.extend_from_slice(&(count as u64).to_le_bytes());
        for (i, page) in r.bytes().chunks_exact(PAGE).enumerate() {
            if !is_zero(page) {
                out.extend_from_slice(&(i as u64).to_le_bytes());
                out.extend_from_slice(page);
            }
        }
    }
}

fn read_u64(body: &[u8], pos: usize) -> Option<u64> {
    let b = body.get(pos..pos.checked_add(8)?)?;
    Some(u64::from_le_bytes([
        b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7],
    ]))
}

/// Check the body against the regions `layout` (gpa, size) without writing anything.
pub(super) fn check(body: &[u8], layout: &[(u64, u64)]) -> Result<(), SnapshotError> {
    let mut pos = 0usize;
    for (r, &(_, size)) in layout.iter().enumerate() {
        let field = |f: &str| alloc::format!("region[{r}].{f}");
        let left = |pos: usize| body.len() - pos;
        let count = read_u64(body, pos).ok_or_else(|| {
            SnapshotError::new(
                "ram",
                &field("page_count"),
                alloc::format!("truncated: 8 bytes needed, {} left", left(pos)),
            )
        })?;
        pos += 8;
        let pages = size / PAGE as u64;
        if count > pages {
            return Err(SnapshotError::new(
                "ram",
                &field("page_count"),
                alloc::format!("{count} pages in a region of {pages}"),
            ));
        }
        let mut next = 0u64;
        for n in 0..count {
            let index = read_u64(body, pos).ok_or_else(|| {
                SnapshotError::new(
                    "ram",
                    &alloc::format!("region[{r}].pages[{n}].index"),
                    alloc::format!("truncated: 8 bytes needed, {} left", left(pos)),
                )
            })?;
            if index < next || index >= pages {
                return Err(SnapshotError::new(
                    "ram",
                    &alloc::format!("region[{r}].pages[{n}].index"),
                    alloc::format!(
                        "page {index}: expected {next} to {} (increasing, inside the region)",
                        pages - 1
                    ),
                ));
            }
            next = index + 1;
            pos += 8;
            if left(pos) < PAGE {
                return Err(SnapshotError::new(
                    "ram",
                    &alloc::format!("region[{r}].pages[{n}].bytes"),
                    alloc::format!("truncated: 4096 bytes needed, {} left", left(pos)),
                ));
            }
            pos += PAGE;
        }
    }
    if pos != body.len() {
        return Err(SnapshotError::new(
            "ram",
            "",
            alloc::format!("{} bytes after the last region", body.len() - pos),
        ));
    }
    Ok(())
}

/// Write a body [`check`] accepted into `mem` (whose layout it was checked against):
/// every page of every region, listed pages from the body and the others zero.
pub(super) fn apply(body: &[u8], mem: &mut GuestMemory) {
    let layout: Vec<(u64, u64)> = mem.regions().iter().map(|r| (r.gpa(), r.size())).collect();
    let mut pos = 0usize;
    for (gpa, size) in layout {
        let Some(region) = mem.slice_mut(gpa, size) else {
            return;
        };
        let count = read_u64(body, pos).unwrap_or(0);
        pos += 8;
        let mut next = 0usize;
        for _ in 0..count {
            let index = read_u64(body, pos).unwrap_or(0) as usize;
            pos += 8;
            region[next * PAGE..index * PAGE].fill(0);
            region[index * PAGE..(index + 1) * PAGE].copy_from_slice(&body[pos..pos + PAGE]);
            pos += PAGE;
            next = index + 1;
        }
        region[next * PAGE..].fill(0);
    }
}
