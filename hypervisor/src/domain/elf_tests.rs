//! Tests of the guest image parser on crafted images.

use super::*;
use alloc::string::ToString;
use alloc::vec;
use proptest::prelude::*;

const PT_NOTE: u32 = 4;
const PT_GNU_STACK: u32 = 0x6474_e551;

#[derive(Clone, Copy)]
struct Ph {
    p_type: u32,
    flags: u32,
    offset: u64,
    vaddr: u64,
    paddr: u64,
    filesz: u64,
    memsz: u64,
    align: u64,
}

fn load(flags: u32, offset: u64, addr: u64, filesz: u64, memsz: u64) -> Ph {
    Ph {
        p_type: PT_LOAD,
        flags,
        offset,
        vaddr: addr,
        paddr: addr,
        filesz,
        memsz,
        align: 0x1000,
    }
}

/// A small ELF writer; `good()` is a valid image, tests break one thing.
#[derive(Clone)]
struct Elf {
    class: u8,
    data: u8,
    ident_version: u8,
    e_type: u16,
    machine: u16,
    e_version: u32,
    entry: u64,
    phoff: u64,
    ehsize: u16,
    phentsize: u16,
    /// `None`: the number of `phdrs`.
    phnum: Option<u16>,
    phdrs: Vec<Ph>,
    /// Raw bytes written last: (file offset, bytes).
    raw: Vec<(usize, Vec<u8>)>,
    len: usize,
}

/// One note entry, padded to 4 bytes.
fn note(name: &[u8], n_type: u32, desc: &[u8]) -> Vec<u8> {
    let mut v = Vec::new();
    v.extend_from_slice(&(name.len() as u32).to_le_bytes());
    v.extend_from_slice(&(desc.len() as u32).to_le_bytes());
    v.extend_from_slice(&n_type.to_le_bytes());
    v.extend_from_slice(name);
    v.resize(v.len().next_multiple_of(4), 0);
    v.extend_from_slice(desc);
    v.resize(v.len().next_multiple_of(4), 0);
    v
}

fn good() -> Elf {
    Elf {
        class: 2,
        data: 1,
        ident_version: 1,
        e_type: 2,
        machine: 62,
        e_version: 1,
        entry: 0x20_0010,
        phoff: 64,
        ehsize: 64,
        phentsize: 56,
        phnum: None,
        phdrs: vec![
            load(PF_R | PF_X, 0x1000, 0x20_0000, 0x1000, 0x1000),
            load(PF_R | PF_W, 0x2000, 0x20_1000, 0x100, 0x3000),
            Ph {
                p_type: PT_NOTE,
                flags: PF_R,
                offset: 0x2100,
                vaddr: 0,
                paddr: 0,
                filesz: 0x28,
                memsz: 0,
                align: 4,
            },
            Ph {
                p_type: PT_GNU_STACK,
                flags: PF_R | PF_W,
                offset: 0,
                vaddr: 0,
                paddr: 0,
                filesz: 0,
                memsz: 0,
                align: 16,
            },
            // An empty PT_LOAD: ignored.
            load(PF_R, 0, 0, 0, 0),
        ],
        raw: vec![(
            0x2100,
            [note(b"NumaVisor\0", 1, &[1, 0, 0, 0]), note(b"", 7, b"")].concat(),
        )],
        len: 0x3000,
    }
}

impl Elf {
    fn build(&self) -> Vec<u8> {
        let mut b = vec![0u8; self.len.max(64)];
        fn put_at(b: &mut [u8], off: usize, v: &[u8]) {
            let end = off.saturating_add(v.len());
            if let Some(dst) = b.get_mut(off..end) {
                dst.copy_from_slice(v);
            }
        }
        let mut put = |off: usize, v: &[u8]| put_at(&mut b, off, v);
        put(0, b"\x7fELF");
        put(4, &[self.class, self.data, self.ident_version]);
        put(16, &self.e_type.to_le_bytes());
        put(18, &self.machine.to_le_bytes());
        put(20, &self.e_version.to_le_bytes());
        put(24, &self.entry.to_le_bytes());
        put(32, &self.phoff.to_le_bytes());
        put(52, &self.ehsize.to_le_bytes());
        put(54, &self.phentsize.to_le_bytes());
        let phnum = self.phnum.unwrap_or(self.phdrs.len() as u16);
        put(56, &phnum.to_le_bytes());
        for (i, p) in self.phdrs.iter().enumerate() {
            let o = (self.phoff as usize).saturating_add(i * usize::from(self.phentsize));
            put(o, &p.p_type.to_le_bytes());
            put(o.saturating_add(4), &p.flags.to_le_bytes());
            put(o.saturating_add(8), &p.offset.to_le_bytes());
            put(o.saturating_add(16), &p.vaddr.to_le_bytes());
            put(o.saturating_add(24), &p.paddr.to_le_bytes());
            put(o.saturating_add(32), &p.filesz.to_le_bytes());
            put(o.saturating_add(40), &p.memsz.to_le_bytes());
            put(o.saturating_add(48), &p.align.to_le_bytes());
        }
        // Segment contents: a recognisable pattern.
        for p in self.phdrs.iter().filter(|p| p.p_type == PT_LOAD) {
            for i in 0..p.filesz as usize {
                let o = (p.offset as usize).saturating_add(i);
                if let Some(x) = b.get_mut(o) {
                    *x = (i % 251) as u8 + 1;
                }
            }
        }
        for (off, bytes) in &self.raw {
            put_at(&mut b, *off, bytes);
        }
        b.truncate(self.len);
        b
    }

    fn with(mut self, f: impl FnOnce(&mut Elf)) -> Elf {
        f(&mut self);
        self
    }
}

#[test]
fn good_image() {
    let bytes = good().build();
    let img = GuestImage::parse(&bytes).unwrap();
    assert_eq!(img.entry, 0x20_0010);
    assert_eq!(
        img.segments,
        [
            Segment {
                vaddr: 0x20_0000,
                file_range: 0x1000..0x2000,
                mem_size: 0x1000,
                flags: PF_R | PF_X,
            },
            Segment {
                vaddr: 0x20_1000,
                file_range: 0x2000..0x2100,
                mem_size: 0x3000,
                flags: PF_R | PF_W,
            },
        ]
    );
    assert_eq!(img.span, (0x20_0000, 0x20_4000));
    let text = img.segments[0].bytes(&bytes).unwrap();
    assert_eq!(text.len(), 0x1000);
    assert_eq!((text[0], text[1]), (1, 2));
    assert_eq!(img.segments[1].end(), 0x20_4000);
    assert_eq!(
        img.notes,
        [
            Note {
                n_type: 1,
                name: 0x210c..0x2116,
                desc: 0x2118..0x211c
            },
            Note {
                n_type: 7,
                name: 0x2128..0x2128,
                desc: 0x2128..0x2128
            },
        ]
    );
    assert_eq!(
        img.notes[0].bytes(&bytes),
        Some((b"NumaVisor\0".as_slice(), [1u8, 0, 0, 0].as_slice()))
    );
}

#[test]
fn notes() {
    // 8-byte aligned notes (as GNU property notes are).
    let e = good().with(|e| {
        e.phdrs[2].align = 8;
        e.phdrs[2].filesz = 0x18;
        let mut n = Vec::new();
        n.extend_from_slice(&4u32.to_le_bytes());
        n.extend_from_slice(&8u32.to_le_bytes());
        n.extend_from_slice(&5u32.to_le_bytes());
        n.extend_from_slice(b"GNU\0");
        n.extend_from_slice(&[9; 8]);
        e.raw = vec![(0x2100, n)];
    });
    let img = GuestImage::parse(&e.build()).unwrap();
    assert_eq!(
        img.notes,
        [Note {
            n_type: 5,
            name: 0x210c..0x2110,
            desc: 0x2110..0x2118
        }]
    );
    // No notes at all.
    let e = good().with(|e| {
        e.phdrs.remove(2);
    });
    assert!(GuestImage::parse(&e.build()).unwrap().notes.is_empty());
    // Malformed: a descriptor running past the segment, a header cut short,
    // a huge name size.
    let cut = good().with(|e| e.phdrs[2].filesz = 0x1b);
    let short = good().with(|e| e.phdrs[2].filesz = 0x2c);
    let huge = good().with(|e| e.raw.push((0x2100, u32::MAX.to_le_bytes().to_vec())));
    for (e, want) in [
        (cut, "segment 2: malformed note at file offset 0x2100"),
        (short, "segment 2: malformed note at file offset 0x2128"),
        (huge, "segment 2: malformed note at file offset 0x2100"),
        (
            good().with(|e| e.phdrs[2].offset = 0x2ff0),
            "segment 2 file range 0x2ff0+0x28 beyond the image (0x3000 bytes)",
        ),
    ] {
        assert_eq!(GuestImage::parse(&e.build()).unwrap_err().to_string(), want);
    }
}

#[test]
fn accepted_variants() {
    // Segments given out of address order; sharing a page but not bytes;
    // unaligned (align 0 and 1); entry at the last file byte.
    let e = good().with(|e| {
        e.phdrs = vec![
            Ph {
                align: 1,
                ..load(PF_R | PF_W, 0x2000, 0x20_1800, 0x100, 0x200)
            },
            Ph {
                align: 0,
                ..load(PF_R | PF_X, 0x1000, 0x20_0000, 0x1800, 0x1800)
            },
        ];
        e.entry = 0x20_17ff;
    });
    let img = GuestImage::parse(&e.build()).unwrap();
    assert_eq!(img.span, (0x20_0000, 0x20_1a00));
    assert_eq!(img.segments[0].vaddr, 0x20_1800);
    // A bigger program header entry size is stepped over.
    let e = good().with(|e| {
        e.phentsize = 64;
        e.ehsize = 80;
    });
    assert_eq!(GuestImage::parse(&e.build()).unwrap().segments.len(), 2);
    // Largest span allowed.
    let e = good().with(|e| {
        e.phdrs[1].memsz = MAX_IMAGE_SPAN - 0x1000;
    });
    assert_eq!(
        GuestImage::parse(&e.build()).unwrap().span.1,
        0x20_0000 + MAX_IMAGE_SPAN
    );
}

#[test]
fn bad_images() {
    let cases: Vec<(Elf, &str)> = vec![
        (good().with(|e| e.class = 1), "ELF class 32; need ELF64"),
        (good().with(|e| e.class = 7), "ELF class 7 is invalid; need ELF64"),
        (good().with(|e| e.data = 2), "big-endian ELF; need little-endian"),
        (good().with(|e| e.data = 0), "ELF data encoding 0 is invalid; need little-endian"),
        (good().with(|e| e.ident_version = 0), "ELF version 0; need 1"),
        (good().with(|e| e.e_version = 2), "ELF version 2; need 1"),
        (good().with(|e| e.machine = 40), "machine 40 (ARM); need x86_64"),
        (good().with(|e| e.machine = 3), "machine 3 (i386); need x86_64"),
        (good().with(|e| e.machine = 183), "machine 183 (AArch64); need x86_64"),
        (good().with(|e| e.machine = 999), "machine 999 (unknown); need x86_64"),
        (good().with(|e| e.e_type = 3), "ELF type 3 (shared object or position-independent executable); need 2 (executable at a fixed address)"),
        (good().with(|e| e.e_type = 1), "ELF type 1 (relocatable object); need 2 (executable at a fixed address)"),
        (good().with(|e| e.e_type = 9), "ELF type 9; need 2 (executable at a fixed address)"),
        (good().with(|e| e.ehsize = 52), "ELF header size 52; need 64"),
        (good().with(|e| e.phentsize = 32), "program header size 32; need at least 56"),
        (good().with(|e| e.phnum = Some(0)), "no program headers"),
        (good().with(|e| e.phnum = Some(0xffff)), "extended program header numbering (e_phnum 0xffff) is not supported"),
        (good().with(|e| e.phoff = 0x2fe0), "program header table 0x2fe0+0x118 beyond the image (0x3000 bytes)"),
        (good().with(|e| e.phoff = u64::MAX - 8), "program header table 0xfffffffffffffff7+0x118 beyond the image (0x3000 bytes)"),
        (good().with(|e| e.phnum = Some(250)), "program header table 0x40+0x36b0 beyond the image (0x3000 bytes)"),
        (good().with(|e| e.len = 0x2080), "segment 1 file range 0x2000+0x100 beyond the image (0x2080 bytes)"),
        (good().with(|e| e.phdrs[0].offset = u64::MAX), "segment 0 file range 0xffffffffffffffff+0x1000 beyond the image (0x3000 bytes)"),
        (good().with(|e| e.phdrs[1].memsz = 0x80), "segment 1: file size 0x100 larger than memory size 0x80"),
        (good().with(|e| { e.phdrs[1].vaddr = u64::MAX - 0xfff; e.phdrs[1].paddr = u64::MAX - 0xfff; }), "segment 1: memory range 0xfffffffffffff000+0x3000 overflows"),
        (good().with(|e| e.phdrs[1].vaddr = 0x7fff_ffff_f000), "segment 1: [0x7ffffffff000-0x800000002000) is not in one canonical half of the 48-bit address space"),
        (good().with(|e| e.phdrs[0].align = 0x3000), "segment 0: alignment 0x3000 is not a power of two"),
        (good().with(|e| e.phdrs[1].offset = 0x2010), "segment 1: address 0x201000 and file offset 0x2010 disagree modulo the alignment 0x1000"),
        (good().with(|e| { e.phdrs[1].vaddr = 1 << 48; e.phdrs[1].paddr = 1 << 48; }), "segment 1: [0x1000000000000-0x1000000003000) is not in one canonical half of the 48-bit address space"),
        (good().with(|e| { e.phdrs[1].vaddr = 0x20_0800; e.phdrs[1].paddr = 0x20_0800; e.phdrs[1].offset = 0x1800; }), "segments 0 and 1 overlap: [0x200000-0x201000) and [0x200800-0x203800)"),
        (good().with(|e| { e.phdrs[1].vaddr = 0x20_0000; e.phdrs[1].paddr = 0x20_0000; }), "segments 0 and 1 overlap: [0x200000-0x201000) and [0x200000-0x203000)"),
        (good().with(|e| { e.phdrs[1].vaddr = 0x1100_0000; e.phdrs[1].paddr = 0x1100_0000; }), "image spans 0x10e03000 bytes ([0x200000-0x11003000)); at most 256 MiB"),
        (good().with(|e| e.phdrs[1].memsz = MAX_IMAGE_SPAN - 0xfff), "image spans 0x10000001 bytes ([0x200000-0x10200001)); at most 256 MiB"),
        (good().with(|e| e.entry = 0x20_1010), "entry point 0x201010 is not inside an executable segment"),
        (good().with(|e| e.entry = 0x1f_ffff), "entry point 0x1fffff is not inside an executable segment"),
        (good().with(|e| e.entry = 0x20_1000), "entry point 0x201000 is not inside an executable segment"),
        (good().with(|e| { e.phdrs[0].filesz = 0x10; e.entry = 0x20_0010; }), "entry point 0x200010 is in the zero-filled part of segment 0"),
        (good().with(|e| e.phdrs.iter_mut().for_each(|p| if p.p_type == PT_LOAD { p.memsz = 0; p.filesz = 0; })), "no loadable segment"),
        (good().with(|e| e.phdrs[2].p_type = PT_INTERP), "segment 2 is PT_INTERP: a dynamically linked program; need a static one"),
    ];
    for (elf, want) in &cases {
        match GuestImage::parse(&elf.build()) {
            Ok(_) => panic!("accepted; wanted {want:?}"),
            Err(e) => assert_eq!(&e.to_string(), want),
        }
    }
}

#[test]
fn not_elf_and_truncated() {
    let p = |b: &[u8]| GuestImage::parse(b).unwrap_err().to_string();
    assert_eq!(p(b""), "not an ELF file");
    assert_eq!(p(b"\x7fEL"), "not an ELF file");
    assert_eq!(p(b"MZ\x90\x00 a PE file, not ELF"), "not an ELF file");
    assert_eq!(p(b"\x7fELF"), "truncated ELF header (4 bytes; need 64)");
    assert_eq!(p(b"\x7fELF\x02"), "truncated ELF header (5 bytes; need 64)");
    assert_eq!(p(b"\x7fELF\x01"), "ELF class 32; need ELF64");
    let full = good().build();
    assert_eq!(p(&full[..63]), "truncated ELF header (63 bytes; need 64)");
    assert_eq!(
        p(&full[..64]),
        "program header table 0x40+0x118 beyond the image (0x40 bytes)"
    );
    assert_eq!(
        p(&full[..0x1000]),
        "segment 0 file range 0x1000+0x1000 beyond the image (0x1000 bytes)"
    );
    // Every truncation gives an error, never a panic.
    for n in 0..full.len() {
        if n < 0x2100 {
            assert!(GuestImage::parse(&full[..n]).is_err(), "{n}");
        }
    }
}

fn check(bytes: &[u8]) -> Result<(), TestCaseError> {
    if let Ok(img) = GuestImage::parse(bytes) {
        prop_assert!(!img.segments.is_empty());
        for s in &img.segments {
            prop_assert!(s.bytes(bytes).is_some());
            prop_assert!(s.file_range.len() as u64 <= s.mem_size);
            prop_assert!(img.span.0 <= s.vaddr && s.end() <= img.span.1);
        }
        prop_assert!(img.span.1 - img.span.0 <= MAX_IMAGE_SPAN);
        let mut by_addr: Vec<&Segment> = img.segments.iter().collect();
        by_addr.sort_by_key(|s| s.vaddr);
        for w in by_addr.windows(2) {
            prop_assert!(w[0].end() <= w[1].vaddr);
        }
        for n in &img.notes {
            prop_assert!(n.bytes(bytes).is_some());
        }
        prop_assert!(img.segments.iter().any(|s| s.flags & PF_X != 0
            && s.vaddr <= img.entry
            && img.entry - s.vaddr < s.file_range.len() as u64));
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn random_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..400)) {
        check(&bytes)?;
        // With a valid identification, the parser gets further.
        let mut b = bytes;
        if b.len() >= 7 {
            b[..7].copy_from_slice(b"\x7fELF\x02\x01\x01");
        }
        if b.len() >= 20 {
            b[16..20].copy_from_slice(&[2, 0, 62, 0]);
        }
        check(&b)?;
    }

    #[test]
    fn mutated_images_never_panic(
        edits in proptest::collection::vec((0usize..0x200, any::<u8>()), 1..8),
        far in proptest::collection::vec((any::<usize>(), any::<u8>()), 0..3),
        cut in proptest::option::weighted(0.2, any::<usize>()),
    ) {
        let mut b = good().build();
        for (at, v) in edits {
            b[at] = v;
        }
        for (at, v) in far {
            let n = b.len();
            b[at % n] = v;
        }
        if let Some(c) = cut {
            let n = b.len();
            b.truncate(c % (n + 1));
        }
        check(&b)?;
    }

    #[test]
    fn random_segment_tables_never_panic(
        segs in proptest::collection::vec(
            (0u32..5, 0u32..8, 0u64..0x4000, 0u64..0x40_0000, any::<bool>(), 0u64..0x3000, 0u64..0x5000, 0u64..0x3000),
            1..6),
        entry in 0u64..0x40_0000,
    ) {
        let e = good().with(|e| {
            e.entry = entry;
            e.phdrs = segs.iter().map(|&(t, flags, offset, vaddr, same, filesz, memsz, align)| Ph {
                p_type: t,
                flags,
                offset,
                vaddr,
                paddr: if same { vaddr } else { vaddr ^ 0x1000 },
                filesz,
                memsz,
                align,
            }).collect();
        });
        check(&e.build())?;
    }
}
