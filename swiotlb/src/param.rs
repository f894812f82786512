//! Sizing: Linux's `swiotlb=` command-line parameter and the helpers that
//! turn it into a pool size and an area count.

use crate::{SEGMENT_SIZE, SEGMENT_SLOTS, SLOT_SIZE};
use core::fmt;

/// Bytes of a pool of `slots` slots, rounded up to whole segments as Linux
/// rounds `swiotlb=N` (a partial segment would be a trap: mappings could never
/// use its tail fully). `None` for zero slots or on overflow.
pub fn pool_bytes_for_slots(slots: usize) -> Option<usize> {
    if slots == 0 {
        return None;
    }
    slots
        .checked_next_multiple_of(SEGMENT_SLOTS)?
        .checked_mul(SLOT_SIZE)
}

/// Linux's choice of area count: one per CPU rounded up to a power of two,
/// but no more areas than segments (rounded down to a power of two), because
/// an area must hold at least one whole segment.
pub fn default_nr_areas(nr_cpus: usize, pool_bytes: usize) -> usize {
    let segments = (pool_bytes / SEGMENT_SIZE).max(1);
    let wanted = nr_cpus
        .max(1)
        .checked_next_power_of_two()
        .unwrap_or(1 << (usize::BITS - 1));
    let limit = 1usize << (usize::BITS - 1 - segments.leading_zeros());
    wanted.min(limit)
}

/// The largest streaming mapping (no explicit `alloc_align_mask`) that a
/// device with this `min_align_mask` can always get, as Linux's
/// `swiotlb_max_mapping_size`: the bits kept from the original address can
/// push the start up to `min_align_mask` bytes into a segment.
pub fn max_mapping_size(min_align_mask: u32) -> usize {
    let lost = if min_align_mask == 0 {
        0
    } else {
        (min_align_mask as usize).next_multiple_of(SLOT_SIZE)
    };
    SEGMENT_SIZE.saturating_sub(lost)
}

/// The value of a `swiotlb=` option: `[<slots>][,<areas>][,force|noforce]`,
/// as in Linux. Numbers are decimal or `0x` hexadecimal.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct SwiotlbParam {
    /// Pool size in slots, rounded up to whole segments.
    pub slots: Option<usize>,
    /// Area count, rounded up to a power of two.
    pub areas: Option<usize>,
    /// `Some(true)` for `force` (bounce every mapping), `Some(false)` for
    /// `noforce` (never bounce).
    pub force: Option<bool>,
}

/// A `swiotlb=` value that does not parse.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ParamError {
    /// A part that is neither a number nor `force`/`noforce`, or out of place.
    Syntax,
    /// A zero or too large slot or area count.
    BadNumber,
}

impl fmt::Display for ParamError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Syntax => write!(f, "swiotlb=: expected [<slots>][,<areas>][,force|noforce]"),
            Self::BadNumber => write!(f, "swiotlb=: slot and area counts must be positive"),
        }
    }
}

impl core::error::Error for ParamError {}

impl SwiotlbParam {
    /// Parses the text after `swiotlb=`. Stricter than Linux, which ignores
    /// what it does not understand: a typo here should be reported, not
    /// silently boot with the default pool.
    pub fn parse(value: &str) -> Result<Self, ParamError> {
        let mut param = Self::default();
        let mut numbers = 0;
        let mut parts = value.split(',').peekable();
        while let Some(part) = parts.next() {
            match part {
                "" => {}
                "force" | "noforce" => {
                    if parts.peek().is_some() {
                        return Err(ParamError::Syntax);
                    }
                    param.force = Some(part == "force");
                }
                _ => {
                    let n = parse_number(part)?;
                    match numbers {
                        0 => {
                            let bytes = pool_bytes_for_slots(n).ok_or(ParamError::BadNumber)?;
                            param.slots = Some(bytes / SLOT_SIZE);
                        }
                        1 => {
                            let areas = n.checked_next_power_of_two().filter(|_| n != 0);
                            param.areas = Some(areas.ok_or(ParamError::BadNumber)?);
                        }
                        _ => return Err(ParamError::Syntax),
                    }
                    numbers += 1;
                }
            }
        }
        Ok(param)
    }

    /// Pool size in bytes: the given slot count, or Linux's 64 MiB default.
    pub fn pool_bytes(&self) -> usize {
        self.slots
            .map_or(crate::DEFAULT_POOL_SIZE, |slots| slots * SLOT_SIZE)
    }
}

fn parse_number(text: &str) -> Result<usize, ParamError> {
    let parsed = match text.strip_prefix("0x").or_else(|| text.strip_prefix("0X")) {
        Some(hex) => usize::from_str_radix(hex, 16),
        None => text.parse::<usize>(),
    };
    match parsed {
        Ok(n) => Ok(n),
        Err(e) if *e.kind() == core::num::IntErrorKind::PosOverflow => Err(ParamError::BadNumber),
        Err(_) => Err(ParamError::Syntax),
    }
}
