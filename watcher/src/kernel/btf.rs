//! Field offsets of kernel structs, read from the kernel's own BTF
//! (/sys/kernel/btf/vmlinux), so the programs can follow a few pointers
//! (task → nsproxy → net, fd → file → socket → sock) on this kernel's
//! layout. The programs cannot relocate field accesses themselves here
//! (no CO-RE from Rust), so the loader hands them these offsets as globals.
//!
//! Only what that needs is parsed: struct and union members, through
//! typedefs and qualifiers, into anonymous members. aya-obj parses BTF too
//! but keeps members private; btf-rs is LGPL.
use std::collections::HashMap;

use anyhow::{Context as _, bail, ensure};

const MAGIC: u16 = 0xeb9f;
const KIND_INT: u32 = 1;
const KIND_ARRAY: u32 = 3;
const KIND_STRUCT: u32 = 4;
const KIND_UNION: u32 = 5;
const KIND_ENUM: u32 = 6;
const KIND_TYPEDEF: u32 = 8;
const KIND_FUNC: u32 = 12;
const KIND_VOLATILE: u32 = 9;
const KIND_CONST: u32 = 10;
const KIND_RESTRICT: u32 = 11;
const KIND_FUNC_PROTO: u32 = 13;
const KIND_VAR: u32 = 14;
const KIND_DATASEC: u32 = 15;
const KIND_DECL_TAG: u32 = 17;
const KIND_TYPE_TAG: u32 = 18;
const KIND_ENUM64: u32 = 19;

#[derive(Clone, Debug)]
struct Member {
    name: u32,
    type_id: u32,
    /// Offset in bits from the start of the struct.
    bit_offset: u32,
    /// A bitfield's width in bits; 0 for a whole member.
    bitfield_bits: u32,
}

#[derive(Clone, Debug)]
struct Type {
    kind: u32,
    name: u32,
    /// The referenced type of typedefs, qualifiers and pointers.
    type_id: u32,
    members: Vec<Member>,
}

pub struct Btf {
    types: Vec<Type>,
    strings: Vec<u8>,
    structs_by_name: HashMap<String, u32>,
    functions_by_name: HashMap<String, u32>,
}

fn u16_at(data: &[u8], at: usize) -> anyhow::Result<u16> {
    Ok(u16::from_le_bytes(data.get(at..at + 2).context("BTF truncated")?.try_into()?))
}

fn u32_at(data: &[u8], at: usize) -> anyhow::Result<u32> {
    Ok(u32::from_le_bytes(data.get(at..at + 4).context("BTF truncated")?.try_into()?))
}

impl Btf {
    pub fn from_sys_fs() -> anyhow::Result<Self> {
        let data = std::fs::read("/sys/kernel/btf/vmlinux").context("reading /sys/kernel/btf/vmlinux")?;
        Self::parse(&data).context("parsing /sys/kernel/btf/vmlinux")
    }

    /// Parses little-endian BTF (x86-64 and arm64 kernels).
    pub fn parse(data: &[u8]) -> anyhow::Result<Self> {
        ensure!(u16_at(data, 0)? == MAGIC, "not little-endian BTF");
        let hdr_len = u32_at(data, 4)? as usize;
        let (type_off, type_len) = (u32_at(data, 8)? as usize, u32_at(data, 12)? as usize);
        let (str_off, str_len) = (u32_at(data, 16)? as usize, u32_at(data, 20)? as usize);
        let types_data = data.get(hdr_len + type_off..hdr_len + type_off + type_len).context("type section")?;
        let strings = data.get(hdr_len + str_off..hdr_len + str_off + str_len).context("string section")?.to_vec();

        // Type ids start at 1; 0 is void.
        let mut types = vec![Type { kind: 0, name: 0, type_id: 0, members: Vec::new() }];
        let mut at = 0;
        while at < types_data.len() {
            let name = u32_at(types_data, at)?;
            let info = u32_at(types_data, at + 4)?;
            let size_or_type = u32_at(types_data, at + 8)?;
            at += 12;
            let vlen = (info & 0xffff) as usize;
            let kind = (info >> 24) & 0x1f;
            let kind_flag = info >> 31 == 1;
            let mut members = Vec::new();
            match kind {
                KIND_INT | KIND_VAR | KIND_DECL_TAG => at += 4,
                KIND_ARRAY => at += 12,
                KIND_STRUCT | KIND_UNION => {
                    for i in 0..vlen {
                        let m = at + i * 12;
                        let offset = u32_at(types_data, m + 8)?;
                        members.push(Member {
                            name: u32_at(types_data, m)?,
                            type_id: u32_at(types_data, m + 4)?,
                            // With kind_flag the high 8 bits are a bitfield's size.
                            bit_offset: if kind_flag { offset & 0x00ff_ffff } else { offset },
                            bitfield_bits: if kind_flag { offset >> 24 } else { 0 },
                        });
                    }
                    at += vlen * 12;
                }
                KIND_FUNC_PROTO => {
                    // Parameters: name and type, kept as members at offset 0.
                    for i in 0..vlen {
                        let p = at + i * 8;
                        members.push(Member {
                            name: u32_at(types_data, p)?,
                            type_id: u32_at(types_data, p + 4)?,
                            bit_offset: 0,
                            bitfield_bits: 0,
                        });
                    }
                    at += vlen * 8;
                }
                KIND_ENUM => at += vlen * 8,
                KIND_DATASEC | KIND_ENUM64 => at += vlen * 12,
                0..=19 => {}
                other => bail!("unknown BTF kind {other}"),
            }
            types.push(Type { kind, name, type_id: size_or_type, members });
        }

        let mut btf = Self { types, strings, structs_by_name: HashMap::new(), functions_by_name: HashMap::new() };
        for (id, t) in btf.types.iter().enumerate() {
            if t.kind == KIND_STRUCT && !t.members.is_empty() {
                let name = btf.string(t.name)?.to_owned();
                btf.structs_by_name.entry(name).or_insert(id as u32);
            } else if t.kind == KIND_FUNC {
                let name = btf.string(t.name)?.to_owned();
                btf.functions_by_name.entry(name).or_insert(id as u32);
            }
        }
        Ok(btf)
    }

    fn string(&self, offset: u32) -> anyhow::Result<&str> {
        let rest = self.strings.get(offset as usize..).context("BTF string offset")?;
        let end = rest.iter().position(|&b| b == 0).unwrap_or(rest.len());
        Ok(std::str::from_utf8(&rest[..end])?)
    }

    /// Follows typedefs and qualifiers to the type they name.
    fn resolve(&self, mut id: u32) -> u32 {
        for _ in 0..32 {
            match self.types.get(id as usize).map(|t| t.kind) {
                Some(KIND_TYPEDEF | KIND_VOLATILE | KIND_CONST | KIND_RESTRICT | KIND_TYPE_TAG) => {
                    id = self.types[id as usize].type_id;
                }
                _ => break,
            }
        }
        id
    }

    /// The parameter names of kernel function `name`, in order: what an
    /// fentry/fexit program reads as its arguments 0, 1, … (and, for
    /// fexit, the return value after the last).
    pub fn function_params(&self, name: &str) -> anyhow::Result<Vec<&str>> {
        let id =
            *self.functions_by_name.get(name).with_context(|| format!("no function {name} in the kernel's BTF"))?;
        let proto =
            self.types.get(self.types[id as usize].type_id as usize).context("BTF function without a prototype")?;
        ensure!(proto.kind == KIND_FUNC_PROTO, "BTF function {name} has no prototype");
        proto.members.iter().map(|p| self.string(p.name)).collect()
    }

    /// Byte offset of `struct name`'s field at `path` (nested embedded
    /// fields, e.g. `["__sk_common", "skc_family"]`), looking into anonymous
    /// structs and unions on the way.
    pub fn offset(&self, name: &str, path: &[&str]) -> anyhow::Result<u32> {
        let (bits, width, _) = self.locate(name, path)?;
        ensure!(bits % 8 == 0 && width == 0, "{name}.{path:?} is a bitfield");
        Ok(bits / 8)
    }

    /// Where the integer field of `struct name` at `path` lies, in bits
    /// from the start of the struct: (offset, width). A bitfield on one
    /// kernel may be a whole `u8` on another (`sock.sk_userlocks`: 4 bits
    /// on older kernels, a byte on 6.18); this says which.
    pub fn int_bits(&self, name: &str, path: &[&str]) -> anyhow::Result<(u32, u32)> {
        let (bits, width, type_id) = self.locate(name, path)?;
        if width != 0 {
            return Ok((bits, width));
        }
        let t = &self.types[type_id as usize];
        ensure!(t.kind == KIND_INT, "{name}.{path:?} is not an integer");
        // An INT's size, in bytes, sits where other kinds keep a type id.
        Ok((bits, t.type_id * 8))
    }

    /// (bit offset, bitfield width or 0, resolved type) of a field.
    fn locate(&self, name: &str, path: &[&str]) -> anyhow::Result<(u32, u32, u32)> {
        let mut id =
            *self.structs_by_name.get(name).with_context(|| format!("no struct {name} in the kernel's BTF"))?;
        let (mut bits, mut width) = (0, 0);
        for field in path {
            let (member_bits, member_width, member_type) = self
                .find_member(id, field)
                .with_context(|| format!("no field {field} in struct {name} (path {path:?})"))?;
            bits += member_bits;
            width = member_width;
            id = self.resolve(member_type);
        }
        Ok((bits, width, id))
    }

    fn find_member(&self, struct_id: u32, field: &str) -> Option<(u32, u32, u32)> {
        let t = self.types.get(struct_id as usize)?;
        if t.kind != KIND_STRUCT && t.kind != KIND_UNION {
            return None;
        }
        for m in &t.members {
            if m.name != 0 && self.string(m.name).ok()? == field {
                return Some((m.bit_offset, m.bitfield_bits, m.type_id));
            }
        }
        // Anonymous struct and union members hold fields of their own.
        t.members.iter().filter(|m| m.name == 0).find_map(|m| {
            let (bits, width, ty) = self.find_member(self.resolve(m.type_id), field)?;
            Some((m.bit_offset + bits, width, ty))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A tiny BTF blob: struct outer { int a; union { int b; struct inner c; }; }
    /// with struct inner { int x; int y; }.
    fn blob() -> Vec<u8> {
        let strings = b"\0int\0outer\0a\0b\0c\0inner\0x\0y\0f\0bits\0lock\0";
        let s = |name: &str| {
            let needle = format!("\0{name}\0");
            (strings.windows(needle.len()).position(|w| w == needle.as_bytes()).unwrap() + 1) as u32
        };
        let mut types = Vec::new();
        let mut push = |words: &[u32]| {
            for w in words {
                types.extend_from_slice(&w.to_le_bytes());
            }
        };
        // 1: int
        push(&[s("int"), KIND_INT << 24, 4, 32]);
        // 2: struct inner { int x @0; int y @32 }
        push(&[s("inner"), (KIND_STRUCT << 24) | 2, 8, s("x"), 1, 0, s("y"), 1, 32]);
        // 3: anonymous union { int b @0; struct inner c @0 }
        push(&[0, (KIND_UNION << 24) | 2, 8, s("b"), 1, 0, s("c"), 2, 0]);
        // 4: typedef inner_t = struct inner (unused, exercises resolve)
        push(&[s("inner"), KIND_TYPEDEF << 24, 2]);
        // 5: struct outer { int a @0; union @64 }
        push(&[s("outer"), (KIND_STRUCT << 24) | 2, 16, s("a"), 1, 0, 0, 3, 64]);
        // 6: int (int x, int y); 7: f, of that prototype
        push(&[0, (KIND_FUNC_PROTO << 24) | 2, 1, s("x"), 1, s("y"), 1]);
        push(&[s("f"), KIND_FUNC << 24, 6]);
        // 8: struct bits { int lock: 4 @36 } (kind_flag: bitfield sizes in the offsets)
        push(&[s("bits"), (1 << 31) | (KIND_STRUCT << 24) | 1, 8, s("lock"), 1, (4 << 24) | 36]);
        let mut data = Vec::new();
        data.extend_from_slice(&MAGIC.to_le_bytes());
        data.extend_from_slice(&[1, 0]);
        for w in [24u32, 0, types.len() as u32, types.len() as u32, strings.len() as u32] {
            data.extend_from_slice(&w.to_le_bytes());
        }
        data.extend_from_slice(&types);
        data.extend_from_slice(strings);
        data
    }

    #[test]
    fn function_parameters_in_order() {
        let btf = Btf::parse(&blob()).unwrap();
        assert_eq!(btf.function_params("f").unwrap(), ["x", "y"]);
        assert!(btf.function_params("g").is_err());
        // A FUNC_PROTO's parameters are not taken for struct members.
        assert_eq!(btf.offset("outer", &["c", "y"]).unwrap(), 12);
    }

    #[test]
    fn offsets_through_anonymous_members_and_nesting() {
        let btf = Btf::parse(&blob()).unwrap();
        assert_eq!(btf.offset("outer", &["a"]).unwrap(), 0);
        assert_eq!(btf.offset("outer", &["b"]).unwrap(), 8);
        assert_eq!(btf.offset("outer", &["c", "y"]).unwrap(), 12);
        assert!(btf.offset("outer", &["z"]).is_err());
        assert!(btf.offset("nothing", &["a"]).is_err());
        assert!(Btf::parse(&[0; 24]).is_err());
    }

    #[test]
    fn bitfields_and_whole_integers() {
        let btf = Btf::parse(&blob()).unwrap();
        assert_eq!(btf.int_bits("bits", &["lock"]).unwrap(), (36, 4));
        assert!(btf.offset("bits", &["lock"]).is_err(), "a bitfield has no byte offset");
        assert_eq!(btf.int_bits("outer", &["a"]).unwrap(), (0, 32));
        assert_eq!(btf.int_bits("outer", &["c", "y"]).unwrap(), (96, 32));
        assert!(btf.int_bits("outer", &["c"]).is_err(), "a struct is no integer");
    }

    #[test]
    fn reads_this_kernels_btf() {
        let Ok(btf) = Btf::from_sys_fs() else {
            return; // a kernel without BTF: the loader says so at start
        };
        // Stable since forever: pid follows other fields, so it is not 0.
        assert!(btf.offset("task_struct", &["pid"]).unwrap() > 0);
        assert!(btf.offset("sock", &["__sk_common", "skc_family"]).is_ok());
        assert!(btf.offset("net", &["ns", "inum"]).is_ok());
        let (_, width) = btf.int_bits("sock", &["sk_userlocks"]).unwrap();
        assert!(width == 4 || width == 8, "{width}");
    }
}
