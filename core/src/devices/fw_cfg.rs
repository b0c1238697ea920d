//! QEMU's firmware configuration device (fw_cfg) on its PC ports, as QEMU's
//! `docs/specs/fw_cfg.rst` describes it: a selector, a data port, and the DMA interface.
//!
//! Ports (register [`FW_CFG_PORT_BASE`] with [`FW_CFG_PORT_LEN`]; offsets below are from
//! 0x510, the range QEMU's `QEMU0002` ACPI node claims):
//!
//! | port | access | what |
//! |---|---|---|
//! | 0x510 | word write | selects an item and resets the data offset to 0 |
//! | 0x510, 0x511 | byte read | the next byte of the selected item (0 past its end) |
//! | 0x510, 0x511 | byte write | a data write, ignored (QEMU dropped them in v2.4) |
//! | 0x514-0x51B | read | "QEMU CFG", the DMA signature, string order at any width |
//! | 0x514, 0x518 | dword write | the big-endian address of a `FWCfgDmaAccess`: the high half at 0x514, the low half at 0x518, which starts the transfer |
//!
//! Any other access reads 0 and writes nothing, as QEMU's accessors refuse it.
//!
//! Items are little-endian, as QEMU stores them: the signature `QEMU` (0x0000), the ID
//! (0x0001: bit 0 traditional interface, bit 1 DMA when enabled), RAM_SIZE (u64),
//! NOGRAPHIC, NB_CPUS and MAX_CPUS (u16), the Linux boot items the loader provides, and
//! the file directory (0x0019: a big-endian count, then 64-byte entries of big-endian
//! size, big-endian selector and a NUL-terminated name), whose files are kept sorted by
//! name and numbered from 0x0020 in that order, as QEMU numbers them.
//!
//! Memory: an item holds either its own bytes or a range of guest memory
//! ([`FwCfgData::GuestMemory`]). The kernel and initrd items describe what the loader has
//! already put in guest memory, so they are ranges read at access time: the host keeps no
//! second copy of a large image (the reads then see what the guest has done to that
//! memory since, where QEMU would return the file as loaded). The directory is computed
//! from the file list when read. So host memory is the items' own bytes and a 64-byte
//! name per file, whatever the guest does; the exit path allocates nothing.

use crate::mmu::memory::GuestMemory;
use alloc::collections::BTreeMap;
use alloc::string::String;
use alloc::vec::Vec;
use core::fmt;

/// First port of the device (the selector).
pub const FW_CFG_PORT_BASE: u16 = 0x510;
/// Ports the device decodes: selector/data 0x510-0x511, DMA address 0x514-0x51B.
pub const FW_CFG_PORT_LEN: u16 = 12;
/// The data port.
pub const FW_CFG_DATA_PORT: u16 = 0x511;
/// The DMA address register's first port.
pub const FW_CFG_DMA_PORT: u16 = 0x514;

/// Offset of the DMA address register in the range.
const DMA_OFFSET: u16 = FW_CFG_DMA_PORT - FW_CFG_PORT_BASE;
/// What the DMA address register reads as.
const DMA_SIGNATURE: [u8; 8] = *b"QEMU CFG";

/// Selector keys (QEMU's `FW_CFG_*`).
pub mod keys {
    /// "QEMU".
    pub const SIGNATURE: u16 = 0x00;
    /// Feature bits: 1 traditional interface, 2 DMA.
    pub const ID: u16 = 0x01;
    /// RAM size in bytes (u64).
    pub const RAM_SIZE: u16 = 0x03;
    /// Whether there is no graphical console (u16).
    pub const NOGRAPHIC: u16 = 0x04;
    /// vCPUs present at boot (u16).
    pub const NB_CPUS: u16 = 0x05;
    /// Where the protected-mode kernel goes (u32).
    pub const KERNEL_ADDR: u16 = 0x07;
    /// Size of the protected-mode kernel (u32).
    pub const KERNEL_SIZE: u16 = 0x08;
    /// Where the initrd goes (u32).
    pub const INITRD_ADDR: u16 = 0x0a;
    /// Size of the initrd (u32).
    pub const INITRD_SIZE: u16 = 0x0b;
    /// On x86, one more than the highest APIC ID (u16), which is what QEMU puts here.
    pub const MAX_CPUS: u16 = 0x0f;
    /// Entry point of a kernel entered directly (PVH) (u32).
    pub const KERNEL_ENTRY: u16 = 0x10;
    /// The protected-mode kernel's bytes.
    pub const KERNEL_DATA: u16 = 0x11;
    /// The initrd's bytes.
    pub const INITRD_DATA: u16 = 0x12;
    /// Where the command line goes (u32).
    pub const CMDLINE_ADDR: u16 = 0x13;
    /// Size of the command line with its NUL (u32).
    pub const CMDLINE_SIZE: u16 = 0x14;
    /// The command line, NUL-terminated.
    pub const CMDLINE_DATA: u16 = 0x15;
    /// Where the real-mode setup code goes (u32).
    pub const SETUP_ADDR: u16 = 0x16;
    /// Size of the setup code (u32).
    pub const SETUP_SIZE: u16 = 0x17;
    /// The setup code's bytes (the boot sector and setup sectors, header included).
    pub const SETUP_DATA: u16 = 0x18;
    /// The file directory.
    pub const FILE_DIR: u16 = 0x19;
    /// The first file's key.
    pub const FILE_FIRST: u16 = 0x20;
    /// Selector bit 14: write channel (ignored since QEMU 2.4; masked when looking up).
    pub const WRITE_CHANNEL: u16 = 0x4000;
    /// Selector bit 15: an architecture-specific item.
    pub const ARCH_LOCAL: u16 = 0x8000;
    /// The bits that number an item within its half.
    pub const ENTRY_MASK: u16 = 0x3fff;
}

/// FWCfgDmaAccess.control bits.
const DMA_CTL_ERROR: u32 = 1 << 0;
const DMA_CTL_READ: u32 = 1 << 1;
const DMA_CTL_SKIP: u32 = 1 << 2;
const DMA_CTL_SELECT: u32 = 1 << 3;
const DMA_CTL_WRITE: u32 = 1 << 4;

/// A directory entry's size.
const DIR_ENTRY_LEN: usize = 64;
/// A file name's room in a directory entry, NUL included.
const NAME_LEN: usize = 56;
/// How many files the selector space holds (keys 0x20-0x3FFF).
pub const MAX_FILES: usize = (keys::ENTRY_MASK - keys::FILE_FIRST) as usize + 1;

/// What an item holds.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum FwCfgData {
    /// Its own bytes.
    Bytes(Vec<u8>),
    /// A range of guest memory, read when the item is (see the module documentation).
    /// Built with [`FwCfgData::guest_memory`], which checks that it is RAM.
    GuestMemory {
        /// First guest-physical byte.
        gpa: u64,
        /// Length (an item is at most 4 GiB - 1, as in QEMU).
        len: u32,
    },
}

impl FwCfgData {
    /// The range `gpa..gpa+len` of `mem`, which must be RAM.
    pub fn guest_memory(mem: &GuestMemory, gpa: u64, len: u64) -> Result<FwCfgData, FwCfgError> {
        let len32 = u32::try_from(len)
            .ok()
            .filter(|&l| l < u32::MAX)
            .ok_or(FwCfgError::TooLarge { len })?;
        if !mem.is_ram_range(gpa, len) {
            return Err(FwCfgError::NotRam { gpa, len });
        }
        Ok(FwCfgData::GuestMemory { gpa, len: len32 })
    }

    fn len(&self) -> u32 {
        match self {
            // Byte items are checked below 4 GiB when added.
            FwCfgData::Bytes(b) => b.len() as u32,
            FwCfgData::GuestMemory { len, .. } => *len,
        }
    }
}

/// Why an item could not be added.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum FwCfgError {
    /// A file name that is empty, longer than 55 bytes, or not printable ASCII.
    BadName(String),
    /// A file name already in the directory.
    DuplicateName(String),
    /// Every file selector (0x20-0x3FFF) is taken.
    DirectoryFull,
    /// A key that is not a plain item below 0x20 (or arch-specific, bit 15).
    BadKey(u16),
    /// An item of 4 GiB or more.
    TooLarge {
        /// Its length.
        len: u64,
    },
    /// An item whose guest-physical address does not fit the 32-bit ADDR item that names
    /// it.
    AddressAbove4G {
        /// The address.
        addr: u64,
    },
    /// A guest-memory item outside RAM.
    NotRam {
        /// First byte.
        gpa: u64,
        /// Length.
        len: u64,
    },
}

impl fmt::Display for FwCfgError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FwCfgError::BadName(n) => write!(
                f,
                "fw_cfg file name {n:?}: expected 1 to 55 printable ASCII characters"
            ),
            FwCfgError::DuplicateName(n) => write!(f, "fw_cfg file name {n:?} is already used"),
            FwCfgError::DirectoryFull => {
                write!(f, "fw_cfg directory is full ({MAX_FILES} files)")
            }
            FwCfgError::BadKey(k) => write!(
                f,
                "fw_cfg key {k:#06x}: expected a fixed item below 0x20 (or 0x8000-0x801f)"
            ),
            FwCfgError::TooLarge { len } => {
                write!(f, "fw_cfg item of {len} bytes: at most 4 GiB - 2")
            }
            FwCfgError::AddressAbove4G { addr } => write!(
                f,
                "fw_cfg item at guest-physical {addr:#x}: its address item holds 32 bits"
            ),
            FwCfgError::NotRam { gpa, len } => write!(
                f,
                "fw_cfg item at guest-physical {gpa:#x}+{len:#x} is not RAM"
            ),
        }
    }
}

/// The machine facts fw_cfg reports from the start.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FwCfgConfig {
    /// vCPUs present at boot (NB_CPUS).
    pub nb_cpus: u16,
    /// One more than the highest APIC ID (MAX_CPUS, as QEMU fills it on x86).
    pub max_cpus: u16,
    /// Guest RAM in bytes (RAM_SIZE).
    pub ram_size: u64,
    /// No graphical console (NOGRAPHIC): opsvisor's console is the serial port.
    pub nographic: bool,
    /// Whether the DMA interface is offered (ID bit 1, the ports at 0x514).
    pub dma: bool,
}

#[derive(serde::Serialize, serde::Deserialize)]
struct File {
    name: String,
    data: FwCfgData,
}

/// The fw_cfg device: its items and the guest-visible state (selected item, offset,
/// DMA address).
#[derive(serde::Serialize, serde::Deserialize)]
pub struct FwCfg {
    fixed: BTreeMap<u16, FwCfgData>,
    /// Sorted by name; file `i` has key `FILE_FIRST + i`.
    files: Vec<File>,
    dma: bool,
    selected: u16,
    offset: u32,
    dma_address: u64,
}

impl fmt::Debug for FwCfg {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FwCfg")
            .field("items", &self.fixed.keys().collect::<Vec<_>>())
            .field(
                "files",
                &self.files.iter().map(|f| &f.name).collect::<Vec<_>>(),
            )
            .field("selected", &self.selected)
            .field("offset", &self.offset)
            .finish()
    }
}

/// Where the item a selector names lives.
enum Item<'a> {
    Data(&'a FwCfgData),
    Directory,
    None,
}

impl FwCfg {
    /// A device with the signature, ID and the machine items of `config`, the signature
    /// selected.
    pub fn new(config: FwCfgConfig) -> FwCfg {
        let mut fixed = BTreeMap::new();
        fixed.insert(keys::SIGNATURE, FwCfgData::Bytes(b"QEMU".to_vec()));
        let id: u32 = 1 | if config.dma { 2 } else { 0 };
        fixed.insert(keys::ID, FwCfgData::Bytes(id.to_le_bytes().to_vec()));
        fixed.insert(
            keys::RAM_SIZE,
            FwCfgData::Bytes(config.ram_size.to_le_bytes().to_vec()),
        );
        fixed.insert(
            keys::NOGRAPHIC,
            FwCfgData::Bytes(u16::from(config.nographic).to_le_bytes().to_vec()),
        );
        fixed.insert(
            keys::NB_CPUS,
            FwCfgData::Bytes(config.nb_cpus.to_le_bytes().to_vec()),
        );
        fixed.insert(
            keys::MAX_CPUS,
            FwCfgData::Bytes(config.max_cpus.to_le_bytes().to_vec()),
        );
        FwCfg {
            fixed,
            files: Vec::new(),
            dma: config.dma,
            selected: keys::SIGNATURE,
            offset: 0,
            dma_address: 0,
        }
    }

    /// Back to the reset state: the signature selected, no DMA address.
    pub fn reset(&mut self) {
        self.select(keys::SIGNATURE);
        self.dma_address = 0;
    }

    /// Set a fixed item (keys below 0x20, or 0x8000-0x801F), replacing one already there.
    pub fn set_item(&mut self, key: u16, data: FwCfgData) -> Result<(), FwCfgError> {
        if key & keys::WRITE_CHANNEL != 0
            || key & keys::ENTRY_MASK >= keys::FILE_FIRST
            || key == keys::FILE_DIR
        {
            return Err(FwCfgError::BadKey(key));
        }
        Self::check_len(&data)?;
        self.fixed.insert(key, data);
        Ok(())
    }

    /// Set a fixed item to a little-endian u16.
    pub fn set_u16(&mut self, key: u16, v: u16) -> Result<(), FwCfgError> {
        self.set_item(key, FwCfgData::Bytes(v.to_le_bytes().to_vec()))
    }
    /// Set a fixed item to a little-endian u32.
    pub fn set_u32(&mut self, key: u16, v: u32) -> Result<(), FwCfgError> {
        self.set_item(key, FwCfgData::Bytes(v.to_le_bytes().to_vec()))
    }
    /// Set a fixed item to a little-endian u64.
    pub fn set_u64(&mut self, key: u16, v: u64) -> Result<(), FwCfgError> {
        self.set_item(key, FwCfgData::Bytes(v.to_le_bytes().to_vec()))
    }

    /// The protected-mode kernel: KERNEL_ADDR, KERNEL_SIZE and KERNEL_DATA.
    pub fn set_kernel(&mut self, addr: u32, data: FwCfgData) -> Result<(), FwCfgError> {
        self.set_sized(
            keys::KERNEL_ADDR,
            keys::KERNEL_SIZE,
            keys::KERNEL_DATA,
            addr,
            data,
        )
    }
    /// The initrd: INITRD_ADDR, INITRD_SIZE and INITRD_DATA.
    pub fn set_initrd(&mut self, addr: u32, data: FwCfgData) -> Result<(), FwCfgError> {
        self.set_sized(
            keys::INITRD_ADDR,
            keys::INITRD_SIZE,
            keys::INITRD_DATA,
            addr,
            data,
        )
    }
    /// The real-mode setup code: SETUP_ADDR, SETUP_SIZE and SETUP_DATA.
    pub fn set_setup(&mut self, addr: u32, data: FwCfgData) -> Result<(), FwCfgError> {
        self.set_sized(
            keys::SETUP_ADDR,
            keys::SETUP_SIZE,
            keys::SETUP_DATA,
            addr,
            data,
        )
    }
    /// The command line: CMDLINE_ADDR, CMDLINE_SIZE (with the NUL) and CMDLINE_DATA
    /// (NUL-terminated), as QEMU's Linux loader sets them.
    pub fn set_cmdline(&mut self, addr: u32, cmdline: &[u8]) -> Result<(), FwCfgError> {
        let mut bytes = Vec::with_capacity(cmdline.len() + 1);
        bytes.extend_from_slice(cmdline);
        bytes.push(0);
        self.set_sized(
            keys::CMDLINE_ADDR,
            keys::CMDLINE_SIZE,
            keys::CMDLINE_DATA,
            addr,
            FwCfgData::Bytes(bytes),
        )
    }
    /// KERNEL_ENTRY: where a directly entered kernel starts.
    pub fn set_kernel_entry(&mut self, entry: u32) -> Result<(), FwCfgError> {
        self.set_u32(keys::KERNEL_ENTRY, entry)
    }

    fn set_sized(
        &mut self,
        addr_key: u16,
        size_key: u16,
        data_key: u16,
        addr: u32,
        data: FwCfgData,
    ) -> Result<(), FwCfgError> {
        Self::check_len(&data)?;
        self.set_u32(addr_key, addr)?;
        self.set_u32(size_key, data.len())?;
        self.set_item(data_key, data)
    }

    fn check_len(data: &FwCfgData) -> Result<(), FwCfgError> {
        match data {
            FwCfgData::Bytes(b) if b.len() as u64 >= u64::from(u32::MAX) => {
                Err(FwCfgError::TooLarge {
                    len: b.len() as u64,
                })
            }
            _ => Ok(()),
        }
    }

    /// Add a named file to the directory and return its selector. Files are numbered in
    /// name order, so adding one renumbers those after it (add every file before the
    /// guest runs, as QEMU does).
    pub fn add_file(&mut self, name: &str, data: FwCfgData) -> Result<u16, FwCfgError> {
        let valid = !name.is_empty()
            && name.len() < NAME_LEN
            && name.bytes().all(|c| (0x20..0x7f).contains(&c));
        if !valid {
            return Err(FwCfgError::BadName(String::from(name)));
        }
        Self::check_len(&data)?;
        let at = match self
            .files
            .binary_search_by(|f| f.name.as_bytes().cmp(name.as_bytes()))
        {
            Ok(_) => return Err(FwCfgError::DuplicateName(String::from(name))),
            Err(at) => at,
        };
        if self.files.len() >= MAX_FILES {
            return Err(FwCfgError::DirectoryFull);
        }
        self.files.insert(
            at,
            File {
                name: String::from(name),
                data,
            },
        );
        Ok(keys::FILE_FIRST + at as u16)
    }

    /// Add `etc/e820`, QEMU's memory map file: 20-byte little-endian entries of address
    /// (u64), length (u64) and type (u32: 1 RAM, 2 reserved, 3 ACPI, 4 NVS, 5 unusable),
    /// from `(address, length, type)` triples.
    pub fn add_e820<I>(&mut self, entries: I) -> Result<u16, FwCfgError>
    where
        I: IntoIterator<Item = (u64, u64, u32)>,
    {
        let mut bytes = Vec::new();
        for (addr, len, kind) in entries {
            bytes.extend_from_slice(&addr.to_le_bytes());
            bytes.extend_from_slice(&len.to_le_bytes());
            bytes.extend_from_slice(&kind.to_le_bytes());
        }
        self.add_file("etc/e820", FwCfgData::Bytes(bytes))
    }

    /// The selector of the file named `name`.
    pub fn file_key(&self, name: &str) -> Option<u16> {
        self.files
            .binary_search_by(|f| f.name.as_bytes().cmp(name.as_bytes()))
            .ok()
            .map(|i| keys::FILE_FIRST + i as u16)
    }

    fn item(&self, key: u16) -> Item<'_> {
        let index = key & keys::ENTRY_MASK;
        let arch = key & keys::ARCH_LOCAL;
        if arch == 0 && index == keys::FILE_DIR {
            return Item::Directory;
        }
        if arch == 0 && index >= keys::FILE_FIRST {
            return match self.files.get(usize::from(index - keys::FILE_FIRST)) {
                Some(f) => Item::Data(&f.data),
                None => Item::None,
            };
        }
        match self.fixed.get(&(arch | index)) {
            Some(d) => Item::Data(d),
            None => Item::None,
        }
    }

    fn directory_len(&self) -> u32 {
        (4 + DIR_ENTRY_LEN * self.files.len()) as u32
    }

    fn item_len(&self, key: u16) -> u32 {
        match self.item(key) {
            Item::Data(d) => d.len(),
            Item::Directory => self.directory_len(),
            Item::None => 0,
        }
    }

    /// The directory's byte at `offset`.
    fn directory_byte(&self, offset: usize) -> u8 {
        if offset < 4 {
            return (self.files.len() as u32).to_be_bytes()[offset];
        }
        let (i, o) = ((offset - 4) / DIR_ENTRY_LEN, (offset - 4) % DIR_ENTRY_LEN);
        let Some(f) = self.files.get(i) else {
            return 0;
        };
        match o {
            0..=3 => f.data.len().to_be_bytes()[o],
            4..=5 => (keys::FILE_FIRST + i as u16).to_be_bytes()[o - 4],
            6..=7 => 0,
            _ => f.name.as_bytes().get(o - 8).copied().unwrap_or(0),
        }
    }

    /// Copy the selected item's bytes from `offset` into `buf`; returns how many there
    /// were (fewer than `buf.len()` at the item's end). Guest memory that has stopped
    /// being RAM reads as zeros.
    fn read_item(&self, key: u16, offset: u32, buf: &mut [u8], mem: &GuestMemory) -> usize {
        let len = self.item_len(key);
        let n = (len.saturating_sub(offset) as usize).min(buf.len());
        let buf = &mut buf[..n];
        match self.item(key) {
            Item::Data(FwCfgData::Bytes(b)) => {
                buf.copy_from_slice(&b[offset as usize..offset as usize + n]);
            }
            Item::Data(FwCfgData::GuestMemory { gpa, .. }) => {
                if mem.read(gpa + u64::from(offset), buf).is_err() {
                    buf.fill(0);
                }
            }
            Item::Directory => {
                for (i, b) in buf.iter_mut().enumerate() {
                    *b = self.directory_byte(offset as usize + i);
                }
            }
            Item::None => {}
        }
        n
    }

    fn select(&mut self, key: u16) {
        self.selected = key;
        self.offset = 0;
    }

    /// The next byte of the selected item through the data port (0 past its end).
    fn data_read(&mut self, mem: &GuestMemory) -> u8 {
        let mut b = [0u8];
        if self.read_item(self.selected, self.offset, &mut b, mem) == 1 {
            self.offset += 1;
        }
        b[0]
    }

    /// A port read of `size` bytes at `offset` from [`FW_CFG_PORT_BASE`].
    pub fn io_read(&mut self, offset: u16, size: u8, mem: &GuestMemory) -> u32 {
        match (offset, size) {
            (0 | 1, 1) => u32::from(self.data_read(mem)),
            (o, _) if self.dma && o >= DMA_OFFSET => {
                // The signature in string order, whatever the width.
                let mut v = 0u32;
                for i in 0..usize::from(size.min(4)) {
                    let at = usize::from(o - DMA_OFFSET) + i;
                    let byte = DMA_SIGNATURE.get(at).copied().unwrap_or(0);
                    v |= u32::from(byte) << (8 * i);
                }
                v
            }
            _ => 0,
        }
    }

    /// A port write of `size` bytes at `offset` from [`FW_CFG_PORT_BASE`]; `value` is in
    /// the low bytes, as the guest's register held it.
    pub fn io_write(&mut self, offset: u16, size: u8, value: u32, mem: &mut GuestMemory) {
        match (offset, size) {
            (0, 2) => self.select(value as u16),
            // The DMA address register is big-endian: a guest writes each half with
            // cpu_to_be32, so the value the device sees is the register byte-swapped.
            (DMA_OFFSET, 4) if self.dma => {
                self.dma_address = u64::from(value.swap_bytes()) << 32;
            }
            (o, 4) if self.dma && o == DMA_OFFSET + 4 => {
                self.dma_address |= u64::from(value.swap_bytes());
                self.dma_transfer(mem);
            }
            // Data writes (bytes at 0x510/0x511) are ignored since QEMU 2.4, and other
            // widths are refused.
            _ => {}
        }
    }

    /// Run the `FWCfgDmaAccess` at the DMA address, as QEMU's `fw_cfg_dma_transfer`.
    fn dma_transfer(&mut self, mem: &mut GuestMemory) {
        let at = self.dma_address;
        self.dma_address = 0;
        let mut access = [0u8; 16];
        if mem.read(at, &mut access).is_err() {
            // Nowhere to report to if the control word is not RAM either.
            let _ = mem.write(at, &DMA_CTL_ERROR.to_be_bytes());
            return;
        }
        let control = u32::from_be_bytes([access[0], access[1], access[2], access[3]]);
        let mut length = u32::from_be_bytes([access[4], access[5], access[6], access[7]]);
        let mut address = u64::from_be_bytes([
            access[8], access[9], access[10], access[11], access[12], access[13], access[14],
            access[15],
        ]);
        if control & DMA_CTL_SELECT != 0 {
            self.select((control >> 16) as u16);
        }
        let (read, write) = if control & DMA_CTL_READ != 0 {
            (true, false)
        } else if control & DMA_CTL_WRITE != 0 {
            (false, true)
        } else if control & DMA_CTL_SKIP != 0 {
            (false, false)
        } else {
            length = 0;
            (false, false)
        };
        let mut status = 0u32;
        let item_len = self.item_len(self.selected);
        while length > 0 && status & DMA_CTL_ERROR == 0 {
            let n;
            if self.offset >= item_len {
                // Past the end (or no item): a read fills with zeros, a write fails.
                n = length;
                if read && mem.zero_range(address, u64::from(n)).is_err() {
                    status |= DMA_CTL_ERROR;
                }
                if write {
                    status |= DMA_CTL_ERROR;
                }
            } else {
                n = length.min(item_len - self.offset);
                if read && self.copy_to_guest(address, n, mem).is_err() {
                    status |= DMA_CTL_ERROR;
                }
                // Every item is read-only to the guest.
                if write {
                    status |= DMA_CTL_ERROR;
                }
                self.offset += n;
            }
            address = address.wrapping_add(u64::from(n));
            length -= n;
        }
        let _ = mem.write(at, &status.to_be_bytes());
    }

    /// Copy `n` bytes of the selected item from the current offset to guest `address`
    /// through a small buffer (no allocation on the exit path).
    fn copy_to_guest(&self, address: u64, n: u32, mem: &mut GuestMemory) -> Result<(), ()> {
        let n = u64::from(n);
        if !mem.is_ram_range(address, n) {
            return Err(());
        }
        let mut buf = [0u8; 512];
        let mut done = 0u64;
        while done < n {
            let chunk = (n - done).min(buf.len() as u64) as usize;
            let got = self.read_item(
                self.selected,
                self.offset + done as u32,
                &mut buf[..chunk],
                mem,
            );
            mem.write(address + done, &buf[..got]).map_err(|_| ())?;
            done += got as u64;
            if got < chunk {
                break;
            }
        }
        Ok(())
    }
}

impl crate::devices::SavedState for FwCfg {
    fn check_state(&self) -> Result<(), (&'static str, alloc::string::String)> {
        if self.files.len() > MAX_FILES {
            return Err((
                "files",
                alloc::format!("{} files (at most {MAX_FILES})", self.files.len()),
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::vec;

    fn config(dma: bool) -> FwCfgConfig {
        FwCfgConfig {
            nb_cpus: 4,
            max_cpus: 4,
            ram_size: 256 << 20,
            nographic: true,
            dma,
        }
    }

    /// A guest driving the ports the way kvm-unit-tests' lib/x86/fwcfg.c and SeaBIOS's
    /// src/fw/paravirt.c do.
    struct Guest {
        dev: FwCfg,
        mem: GuestMemory,
    }

    impl Guest {
        fn new(dma: bool) -> Guest {
            Guest {
                dev: FwCfg::new(config(dma)),
                mem: GuestMemory::with_ram(1 << 20).unwrap(),
            }
        }
        fn outw(&mut self, v: u16, port: u16) {
            self.dev
                .io_write(port - FW_CFG_PORT_BASE, 2, u32::from(v), &mut self.mem);
        }
        fn outl(&mut self, v: u32, port: u16) {
            self.dev
                .io_write(port - FW_CFG_PORT_BASE, 4, v, &mut self.mem);
        }
        fn outb(&mut self, v: u8, port: u16) {
            self.dev
                .io_write(port - FW_CFG_PORT_BASE, 1, u32::from(v), &mut self.mem);
        }
        fn inb(&mut self, port: u16) -> u8 {
            self.dev.io_read(port - FW_CFG_PORT_BASE, 1, &self.mem) as u8
        }
        fn inl(&mut self, port: u16) -> u32 {
            self.dev.io_read(port - FW_CFG_PORT_BASE, 4, &self.mem)
        }
        /// kvm-unit-tests' `fwcfg_get_u`: select, then `bytes` byte reads, little-endian.
        fn get_u(&mut self, key: u16, bytes: usize) -> u64 {
            self.outw(key, 0x510);
            (0..bytes).fold(0, |r, i| r | u64::from(self.inb(0x511)) << (8 * i))
        }
        /// SeaBIOS's `qemu_cfg_read_entry` without DMA: select, then `insb`.
        fn read_entry(&mut self, key: u16, len: usize) -> Vec<u8> {
            self.outw(key, 0x510);
            (0..len).map(|_| self.inb(0x511)).collect()
        }
        /// SeaBIOS's `qemu_cfg_dma_transfer`: the access structure in memory, its
        /// address written high half then low half, each with cpu_to_be32.
        fn dma(&mut self, control: u32, length: u32, address: u64) -> u32 {
            let at = 0x1000u64;
            let mut access = [0u8; 16];
            access[0..4].copy_from_slice(&control.to_be_bytes());
            access[4..8].copy_from_slice(&length.to_be_bytes());
            access[8..16].copy_from_slice(&address.to_be_bytes());
            self.mem.write(at, &access).unwrap();
            self.outl(((at >> 32) as u32).to_be(), 0x514);
            self.outl((at as u32).to_be(), 0x518);
            u32::from_be_bytes(self.mem.slice(at, 4).unwrap().try_into().unwrap())
        }
    }

    #[test]
    fn signature_id_and_machine_items_read_as_qemu_stores_them() {
        let mut g = Guest::new(false);
        assert_eq!(g.read_entry(keys::SIGNATURE, 4), b"QEMU");
        assert_eq!(g.get_u(keys::ID, 4), 1, "traditional interface, no DMA");
        assert_eq!(g.get_u(keys::NB_CPUS, 2), 4);
        // Read as a u32: the two bytes past the u16 item read as zero.
        assert_eq!(g.get_u(keys::NB_CPUS, 4), 4);
        assert_eq!(g.get_u(keys::MAX_CPUS, 2), 4);
        assert_eq!(g.get_u(keys::RAM_SIZE, 8), 256 << 20);
        assert_eq!(g.get_u(keys::NOGRAPHIC, 2), 1);
        // An unknown item, and one past the file range, read zeros.
        assert_eq!(g.get_u(0x0002, 8), 0);
        assert_eq!(g.get_u(0x3fff, 8), 0);
        assert_eq!(g.get_u(0x8003, 8), 0);
        // Reset selects the signature.
        g.outw(keys::RAM_SIZE, 0x510);
        g.dev.reset();
        assert_eq!(g.inb(0x511), b'Q');
        // Byte reads at 0x510 read data too; byte writes are ignored data writes.
        g.outb(0x05, 0x510);
        assert_eq!(g.inb(0x510), b'E');
        g.outb(0x05, 0x511);
        assert_eq!(g.inb(0x511), b'M');
        // The write-channel bit is masked when looking up.
        assert_eq!(g.get_u(keys::NB_CPUS | keys::WRITE_CHANNEL, 2), 4);
        // Wider reads are not data reads and do not advance.
        g.outw(keys::SIGNATURE, 0x510);
        assert_eq!(g.dev.io_read(0, 2, &g.mem), 0);
        assert_eq!(g.inb(0x511), b'Q');
        // Without DMA the DMA ports read 0.
        assert_eq!(g.inl(0x514), 0);
    }

    #[test]
    fn the_directory_lists_files_sorted_and_each_reads_back() {
        let mut g = Guest::new(false);
        let e820 = g
            .dev
            .add_e820([
                (0, 0x9fc00, 1),
                (0x9fc00, 0x400, 2),
                (0x10_0000, 0xff0_0000, 1),
            ])
            .unwrap();
        let key = g
            .dev
            .add_file("etc/boot-fail-wait", FwCfgData::Bytes(vec![0xff; 4]))
            .unwrap();
        assert_eq!(key, keys::FILE_FIRST);
        // e820 was renumbered behind the earlier name.
        assert_eq!(e820, keys::FILE_FIRST);
        assert_eq!(g.dev.file_key("etc/e820"), Some(keys::FILE_FIRST + 1));
        assert_eq!(
            g.dev.add_file("etc/e820", FwCfgData::Bytes(vec![])),
            Err(FwCfgError::DuplicateName("etc/e820".into()))
        );
        for bad in ["", &"x".repeat(56), "bad\nname"] {
            assert!(matches!(
                g.dev.add_file(bad, FwCfgData::Bytes(vec![])),
                Err(FwCfgError::BadName(_))
            ));
        }
        assert!(g
            .dev
            .add_file(&"y".repeat(55), FwCfgData::Bytes(vec![1]))
            .is_ok());

        // Walk the directory the way SeaBIOS's qemu_romfile_init does.
        g.outw(keys::FILE_DIR, 0x510);
        let count = u32::from_be_bytes([g.inb(0x511), g.inb(0x511), g.inb(0x511), g.inb(0x511)]);
        assert_eq!(count, 3);
        let mut found = Vec::new();
        for _ in 0..count {
            let entry: Vec<u8> = (0..64).map(|_| g.inb(0x511)).collect();
            let size = u32::from_be_bytes(entry[0..4].try_into().unwrap());
            let select = u16::from_be_bytes([entry[4], entry[5]]);
            assert_eq!(&entry[6..8], &[0, 0]);
            let name_end = entry[8..].iter().position(|&c| c == 0).unwrap();
            let name = String::from_utf8(entry[8..8 + name_end].to_vec()).unwrap();
            found.push((name, size, select));
        }
        // Past the last entry, zeros.
        assert_eq!(g.inb(0x511), 0);
        assert_eq!(
            found,
            [
                ("etc/boot-fail-wait".into(), 4, 0x20),
                ("etc/e820".into(), 60, 0x21),
                ("y".repeat(55), 1, 0x22),
            ]
        );
        // The e820 file in QEMU's format.
        let e = g.read_entry(0x21, 60);
        assert_eq!(u64::from_le_bytes(e[20..28].try_into().unwrap()), 0x9fc00);
        assert_eq!(u64::from_le_bytes(e[28..36].try_into().unwrap()), 0x400);
        assert_eq!(u32::from_le_bytes(e[36..40].try_into().unwrap()), 2);
        assert_eq!(
            u64::from_le_bytes(e[48..56].try_into().unwrap()),
            0xff0_0000
        );
    }

    #[test]
    fn linux_boot_items_read_from_guest_memory_without_a_copy() {
        let mut g = Guest::new(false);
        let kernel: Vec<u8> = (0..5000u32).map(|i| (i * 7) as u8).collect();
        g.mem.write(0x10_0000 - 0x2000, &[0; 0x2000]).unwrap();
        g.mem.write(0x8_0000, &kernel).unwrap();
        let data = FwCfgData::guest_memory(&g.mem, 0x8_0000, kernel.len() as u64).unwrap();
        g.dev.set_kernel(0x10_0000, data).unwrap();
        g.dev.set_cmdline(0x2_0000, b"console=ttyS0").unwrap();
        g.dev.set_kernel_entry(0x100_0200).unwrap();
        assert_eq!(g.get_u(keys::KERNEL_ADDR, 4), 0x10_0000);
        assert_eq!(g.get_u(keys::KERNEL_SIZE, 4), 5000);
        assert_eq!(g.read_entry(keys::KERNEL_DATA, 5001)[..5000], kernel[..]);
        assert_eq!(g.read_entry(keys::KERNEL_DATA, 5001)[5000], 0);
        assert_eq!(g.get_u(keys::CMDLINE_SIZE, 4), 14);
        assert_eq!(g.read_entry(keys::CMDLINE_DATA, 14), b"console=ttyS0\0");
        assert_eq!(g.get_u(keys::KERNEL_ENTRY, 4), 0x100_0200);
        // Ranges outside RAM, oversized items and file-range keys are refused.
        assert_eq!(
            FwCfgData::guest_memory(&g.mem, 0xf_f000, 0x2000),
            Err(FwCfgError::NotRam {
                gpa: 0xf_f000,
                len: 0x2000
            })
        );
        assert!(matches!(
            FwCfgData::guest_memory(&g.mem, 0, 1 << 32),
            Err(FwCfgError::TooLarge { .. })
        ));
        assert_eq!(
            g.dev.set_u32(keys::FILE_FIRST, 1),
            Err(FwCfgError::BadKey(0x20))
        );
        assert_eq!(
            g.dev.set_u32(keys::FILE_DIR, 1),
            Err(FwCfgError::BadKey(0x19))
        );
        assert!(g.dev.set_u32(keys::ARCH_LOCAL | 2, 1).is_ok());
        assert_eq!(g.get_u(keys::ARCH_LOCAL | 2, 4), 1);
    }

    #[test]
    fn dma_reads_skips_selects_and_refuses_writes() {
        let mut g = Guest::new(true);
        g.dev
            .add_file("opt/test", FwCfgData::Bytes((0..=255).collect()))
            .unwrap();
        // ID says DMA; the DMA register reads "QEMU CFG" in string order.
        assert_eq!(g.get_u(keys::ID, 4), 3);
        assert_eq!(g.inl(0x514).to_le_bytes(), *b"QEMU");
        assert_eq!(g.inl(0x518).to_le_bytes(), *b" CFG");
        assert_eq!(g.inb(0x517), b'U');

        // Select and read the signature.
        let status = g.dma((u32::from(keys::SIGNATURE) << 16) | 0x08 | 0x02, 4, 0x2000);
        assert_eq!(status, 0);
        assert_eq!(g.mem.slice(0x2000, 4).unwrap(), b"QEMU");

        // Select the file, skip 16 bytes, read 8: bytes 16..24.
        let key = g.dev.file_key("opt/test").unwrap();
        assert_eq!(g.dma((u32::from(key) << 16) | 0x08 | 0x04, 16, 0), 0);
        assert_eq!(g.dma(0x02, 8, 0x3000), 0);
        assert_eq!(
            g.mem.slice(0x3000, 8).unwrap(),
            &[16, 17, 18, 19, 20, 21, 22, 23]
        );
        // A read past the end fills the rest with zeros.
        g.mem.write(0x4000, &[0xaa; 300]).unwrap();
        assert_eq!(g.dma(0x02, 300, 0x4000), 0);
        let got = g.mem.slice(0x4000, 300).unwrap();
        assert_eq!(&got[..232], &(24..=255).collect::<Vec<u8>>()[..]);
        assert!(got[232..].iter().all(|&b| b == 0));
        // The data port continues from the DMA's offset: past the end now.
        assert_eq!(g.inb(0x511), 0);

        // Writes are refused with the error bit; so is a read into memory that is not RAM.
        assert_eq!(g.dma((u32::from(key) << 16) | 0x08 | 0x10, 4, 0x5000), 1);
        assert_eq!(g.dma((u32::from(key) << 16) | 0x08 | 0x02, 4, 0x20_0000), 1);
        // No operation bit: nothing happens, success.
        assert_eq!(g.dma(0, 4, 0x5000), 0);

        // The directory through DMA.
        assert_eq!(
            g.dma((u32::from(keys::FILE_DIR) << 16) | 0x08 | 0x02, 68, 0x6000),
            0
        );
        let dir = g.mem.slice(0x6000, 68).unwrap();
        assert_eq!(&dir[0..4], &1u32.to_be_bytes());
        assert_eq!(&dir[4..8], &256u32.to_be_bytes());
        assert_eq!(&dir[8..10], &0x20u16.to_be_bytes());
        assert_eq!(&dir[12..21], b"opt/test\0");

        // An access structure outside RAM: nothing to report to, nothing breaks; the
        // address register is reset after every transfer.
        g.outl(0, 0x514);
        g.outl(0x00f0_ffffu32.to_be(), 0x518);
        assert_eq!(g.dev.dma_address, 0);
        // A high half above 4 GiB.
        g.outl(1u32.to_be(), 0x514);
        g.outl(0x1000u32.to_be(), 0x518);
        assert_eq!(g.dev.dma_address, 0);
    }
}
