//! SLIT: the System Locality Information Table (ACPI 6.5 §5.2.17).
//!
//! A square matrix of relative distances between localities, which are
//! proximity domains: entry `[i][j]` is the distance from pxm `i` to pxm `j`.
//! Whether the matrix is *sensible* (10 on the diagonal, more elsewhere) is
//! the topology builder's decision; this parser only checks that it fits.

use alloc::vec::Vec;

use super::tables::{read_u64, AcpiError, SdtHeader, SDT_HEADER_LEN};

/// Offset of the matrix: header (36) + locality count (8).
pub const SLIT_MATRIX_OFFSET: usize = SDT_HEADER_LEN + 8;

/// A parsed SLIT.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Slit {
    count: usize,
    matrix: Vec<u8>,
}

impl Slit {
    /// Parses a complete SLIT (header and checksum checked). Fails when
    /// `count * count` matrix bytes do not fit the table (overflow-safe).
    /// Bytes after the matrix are ignored, as Linux does.
    pub fn parse(bytes: &[u8]) -> Result<Slit, AcpiError> {
        let (hdr, table) = SdtHeader::validate(bytes, b"SLIT", SLIT_MATRIX_OFFSET)?;
        let count = read_u64(table, SDT_HEADER_LEN).unwrap_or(u64::MAX);
        let err = AcpiError::SlitSize {
            count,
            length: hdr.length,
        };
        let avail = (table.len() - SLIT_MATRIX_OFFSET.min(table.len())) as u64;
        let cells = count.checked_mul(count).ok_or(err.clone())?;
        if cells > avail {
            return Err(err);
        }
        let (Ok(count), Ok(cells)) = (usize::try_from(count), usize::try_from(cells)) else {
            return Err(err);
        };
        let matrix = table
            .get(SLIT_MATRIX_OFFSET..SLIT_MATRIX_OFFSET + cells)
            .ok_or(err)?
            .to_vec();
        Ok(Slit { count, matrix })
    }

    /// Number of localities (rows, and columns).
    pub fn localities(&self) -> usize {
        self.count
    }

    /// Distance from locality `from` to locality `to`, if both exist.
    pub fn distance(&self, from: u32, to: u32) -> Option<u8> {
        let (from, to) = (from as usize, to as usize);
        if from >= self.count || to >= self.count {
            return None;
        }
        self.matrix
            .get(from.checked_mul(self.count)?.checked_add(to)?)
            .copied()
    }

    /// The matrix, row-major.
    pub fn matrix(&self) -> &[u8] {
        &self.matrix
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::build::{fix_checksum, slit, table};
    use proptest::prelude::*;

    #[test]
    fn parses_matrix() {
        let t = slit(2, &[10, 21, 22, 10]);
        let s = Slit::parse(&t).unwrap();
        assert_eq!(s.localities(), 2);
        assert_eq!(s.distance(0, 1), Some(21));
        assert_eq!(s.distance(1, 0), Some(22));
        assert_eq!(s.distance(1, 1), Some(10));
        assert_eq!(s.distance(2, 0), None);
        assert_eq!(s.distance(u32::MAX, 0), None);
    }

    #[test]
    fn empty_and_trailing() {
        assert_eq!(Slit::parse(&slit(0, &[])).unwrap().localities(), 0);
        let s = Slit::parse(&slit(1, &[10, 99, 99])).unwrap();
        assert_eq!(s.matrix(), &[10]);
    }

    #[test]
    fn count_must_fit() {
        assert!(matches!(
            Slit::parse(&slit(3, &[10; 8])),
            Err(AcpiError::SlitSize { count: 3, .. })
        ));
        // count * count overflows u64.
        assert!(matches!(
            Slit::parse(&slit(1 << 32, &[10; 8])),
            Err(AcpiError::SlitSize { .. })
        ));
        assert!(matches!(
            Slit::parse(&slit(u64::MAX, &[10; 8])),
            Err(AcpiError::SlitSize { .. })
        ));
        // A header without the count field.
        assert!(matches!(
            Slit::parse(&table(b"SLIT", 1, &[0; 4])),
            Err(AcpiError::BadLength { .. })
        ));
    }

    #[test]
    fn length_field_larger_than_buffer() {
        let mut t = slit(2, &[10, 20, 20, 10]);
        t[4..8].copy_from_slice(&100u32.to_le_bytes());
        fix_checksum(&mut t);
        assert!(matches!(Slit::parse(&t), Err(AcpiError::Truncated { .. })));
    }

    proptest! {
        #[test]
        fn random_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..200)) {
            let _ = Slit::parse(&bytes);
            let t = table(b"SLIT", 1, &bytes);
            if let Ok(s) = Slit::parse(&t) {
                prop_assert_eq!(s.matrix().len(), s.localities() * s.localities());
                for i in 0..s.localities() as u32 + 1 {
                    let _ = s.distance(i, 0);
                }
            }
        }

        #[test]
        fn mutations_never_panic(muts in proptest::collection::vec((any::<usize>(), any::<u8>()), 1..6)) {
            let mut t = slit(3, &[10, 20, 30, 20, 10, 20, 30, 20, 10]);
            for (i, v) in muts {
                let n = t.len();
                t[i % n] = v;
            }
            fix_checksum(&mut t);
            let _ = Slit::parse(&t);
        }
    }
}
