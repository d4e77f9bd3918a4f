//! Tracepoint record layouts from tracefs `format` files, as bpftrace
//! reads them: the offsets differ between kernels (6.1's
//! `sched_process_fork` has `char parent_comm[16]` inline where 6.18 has a
//! `__data_loc`; 6.1's `sched_process_exit` has no `group_dead`), so the
//! programs get them at load as a global ([`TracepointOffsets`]) instead of
//! constants.
use std::{fs, path::Path};

use anyhow::{Context as _, bail};
use watcher_common::TracepointOffsets;

/// One field of a tracepoint record (the `common_*` header fields too).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Field {
    pub name: String,
    pub offset: u32,
    pub size: u32,
    /// `__data_loc`: the field holds (length << 16 | offset) of data
    /// placed after the fixed part.
    pub data_loc: bool,
}

/// A parsed `format` file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Format {
    pub name: String,
    pub fields: Vec<Field>,
}

impl Format {
    pub fn field(&self, name: &str) -> Option<&Field> {
        self.fields.iter().find(|f| f.name == name)
    }

    /// The fields after the common header and `__syscall_nr`: a syscall
    /// tracepoint's arguments (sys_enter_*) or `ret` (sys_exit_*).
    fn syscall_fields(&self) -> impl Iterator<Item = &Field> {
        self.fields.iter().filter(|f| !f.name.starts_with("common_") && f.name != "__syscall_nr")
    }
}

/// Parses the text of `/sys/kernel/tracing/events/CATEGORY/NAME/format`.
/// Lines look like
/// `field:char parent_comm[16]; offset:8; size:16; signed:1;`.
pub fn parse(text: &str) -> anyhow::Result<Format> {
    let mut name = None;
    let mut fields = Vec::new();
    for line in text.lines() {
        let line = line.trim();
        if let Some(n) = line.strip_prefix("name:") {
            name = Some(n.trim().to_owned());
        } else if line.starts_with("field:") {
            fields.push(parse_field(line).with_context(|| format!("bad field line {line:?}"))?);
        }
    }
    let name = name.context("no `name:` line")?;
    if fields.is_empty() {
        bail!("no `field:` line");
    }
    Ok(Format { name, fields })
}

fn parse_field(line: &str) -> anyhow::Result<Field> {
    let mut decl = None;
    let (mut offset, mut size) = (None, None);
    for part in line.split(';').map(str::trim).filter(|p| !p.is_empty()) {
        let (key, value) = part.split_once(':').context("a part without `key:`")?;
        match key.trim() {
            "field" => decl = Some(value.trim()),
            "offset" => offset = Some(value.trim().parse::<u32>().context("offset")?),
            "size" => size = Some(value.trim().parse::<u32>().context("size")?),
            _ => {}
        }
    }
    let decl = decl.context("no declaration")?;
    // The name is the declaration's last word, less any array suffix:
    // `__data_loc char[] filename`, `char comm[16]`, `const void * skaddr`.
    let last = decl.rsplit([' ', '*']).find(|w| !w.is_empty()).context("empty declaration")?;
    let name = last.split('[').next().unwrap_or(last).to_owned();
    if name.is_empty() {
        bail!("no field name in {decl:?}");
    }
    Ok(Field {
        name,
        offset: offset.context("no offset")?,
        size: size.context("no size")?,
        data_loc: decl.starts_with("__data_loc"),
    })
}

/// Reads and parses one tracepoint's format under tracefs.
pub fn read(tracefs: &Path, category: &str, name: &str) -> anyhow::Result<Format> {
    let path = tracefs.join("events").join(category).join(name).join("format");
    let text = fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
    parse(&text).with_context(|| format!("parsing {}", path.display()))
}

/// A record field a program reads: where it goes in [`TracepointOffsets`].
struct Need {
    field: &'static str,
    size: u32,
    set: fn(&mut TracepointOffsets, u32),
}

/// What the programs of non-syscall tracepoints read, per tracepoint.
fn needs(name: &str) -> &'static [Need] {
    match name {
        "sched_process_fork" => &[Need { field: "child_pid", size: 4, set: |o, v| o.fork_child_pid = v }],
        "sched_process_exit" => &[Need { field: "pid", size: 4, set: |o, v| o.exit_pid = v }],
        "sched_process_exec" => &[
            Need { field: "filename", size: 4, set: |o, v| o.exec_filename = v },
            Need { field: "old_pid", size: 4, set: |o, v| o.exec_old_pid = v },
        ],
        "inet_sock_set_state" => &[
            Need { field: "skaddr", size: 8, set: |o, v| o.tcp_skaddr = v },
            Need { field: "oldstate", size: 4, set: |o, v| o.tcp_oldstate = v },
            Need { field: "newstate", size: 4, set: |o, v| o.tcp_newstate = v },
            Need { field: "sport", size: 2, set: |o, v| o.tcp_sport = v },
            Need { field: "family", size: 2, set: |o, v| o.tcp_family = v },
            Need { field: "protocol", size: 2, set: |o, v| o.tcp_protocol = v },
            Need { field: "saddr", size: 4, set: |o, v| o.tcp_saddr = v },
            Need { field: "saddr_v6", size: 16, set: |o, v| o.tcp_saddr_v6 = v },
        ],
        _ => &[],
    }
}

/// The layouts of the tracepoints to attach, as the programs need them.
#[derive(Debug, Default)]
pub struct Layouts {
    pub offsets: TracepointOffsets,
    /// A tracepoint whose record lacks what its program needs, and why:
    /// it must not be attached (its program would read the wrong bytes).
    pub unusable: Vec<((String, String), String)>,
    /// Fields that are missing but have a fallback, in a user's words.
    pub notes: Vec<String>,
}

impl Layouts {
    pub fn unusable_reason(&self, category: &str, name: &str) -> Option<&str> {
        self.unusable.iter().find(|((c, n), _)| c == category && n == name).map(|(_, reason)| reason.as_str())
    }
}

/// Reads every listed tracepoint's format (through `read_format`, so that
/// tests can hand in fixtures) and fills the offsets the programs use.
pub fn layouts(tracepoints: &[(&str, &str)], read_format: impl Fn(&str, &str) -> anyhow::Result<Format>) -> Layouts {
    let mut out = Layouts::default();
    for &(category, name) in tracepoints {
        let format = match read_format(category, name) {
            Ok(f) => f,
            Err(e) => {
                out.unusable.push(((category.to_owned(), name.to_owned()), format!("{e:#}")));
                continue;
            }
        };
        let result = if category == "syscalls" {
            syscall_layout(&format, &mut out.offsets)
        } else {
            named_layout(&format, &mut out.offsets, &mut out.notes)
        };
        if let Err(e) = result {
            out.unusable.push(((category.to_owned(), name.to_owned()), format!("{e:#}")));
        }
    }
    out
}

fn named_layout(format: &Format, offsets: &mut TracepointOffsets, notes: &mut Vec<String>) -> anyhow::Result<()> {
    let mut found = Vec::new();
    for need in needs(&format.name) {
        let field = format.field(need.field).with_context(|| format!("its format has no field {}", need.field))?;
        if field.size != need.size || field.offset == 0 {
            bail!(
                "its field {} is {} bytes at offset {}, where {} bytes were expected",
                need.field,
                field.size,
                field.offset,
                need.size
            );
        }
        found.push((need, field.offset));
    }
    // Only now, so that a refused tracepoint leaves every offset of it 0.
    for (need, offset) in found {
        (need.set)(offsets, offset);
    }
    if format.name == "sched_process_exit" {
        match format.field("group_dead") {
            Some(f) if f.size == 1 && f.offset != 0 => offsets.exit_group_dead = f.offset,
            _ => notes.push(
                "sched/sched_process_exit has no field group_dead on this kernel: a process's end is read from the kernel's BTF (signal->live), or without BTF taken to be its main thread's exit".to_owned(),
            ),
        }
    }
    Ok(())
}

fn syscall_layout(format: &Format, offsets: &mut TracepointOffsets) -> anyhow::Result<()> {
    let fields: Vec<&Field> = format.syscall_fields().collect();
    let first = fields.first().with_context(|| format!("{} has no argument or ret field", format.name))?;
    // The programs read argument i at (first argument) + 8 * i, every
    // argument 8 bytes, as the kernel lays out every syscall record.
    for (i, f) in fields.iter().enumerate() {
        if f.size != 8 || f.offset != first.offset + 8 * i as u32 {
            bail!(
                "its field {} is {} bytes at offset {}, not 8 bytes at {}",
                f.name,
                f.size,
                f.offset,
                first.offset + 8 * i as u32
            );
        }
    }
    let (slot, what) = if format.name.starts_with("sys_exit_") {
        if first.name != "ret" {
            bail!("its format has no field ret");
        }
        (&mut offsets.syscall_ret, "ret")
    } else {
        (&mut offsets.syscall_args, "the first argument")
    };
    // One offset serves every syscall program: a tracepoint that differs
    // from the others cannot be read by them.
    if *slot != 0 && *slot != first.offset {
        bail!("{what} is at offset {}, where the other syscall tracepoints have it at {}", first.offset, *slot);
    }
    *slot = first.offset;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The format files of the two kernels tested here, as read from their
    /// tracefs (6.1: Debian 12's, in the guest of `cargo xtask guest`).
    fn fixture(kernel: &str, name: &str) -> anyhow::Result<Format> {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("testdata/tracepoint-formats").join(kernel).join(name);
        parse(&fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?)
    }

    const USED: [(&str, &str); 19] = [
        ("syscalls", "sys_enter_bind"),
        ("syscalls", "sys_enter_listen"),
        ("syscalls", "sys_exit_bind"),
        ("syscalls", "sys_exit_listen"),
        ("syscalls", "sys_enter_close"),
        ("syscalls", "sys_enter_socket"),
        ("syscalls", "sys_enter_setsockopt"),
        ("syscalls", "sys_exit_socket"),
        ("syscalls", "sys_exit_setsockopt"),
        ("syscalls", "sys_enter_accept"),
        ("syscalls", "sys_exit_accept"),
        ("syscalls", "sys_enter_accept4"),
        ("syscalls", "sys_exit_accept4"),
        ("syscalls", "sys_enter_execve"),
        ("syscalls", "sys_enter_execveat"),
        ("sched", "sched_process_fork"),
        ("sched", "sched_process_exec"),
        ("sched", "sched_process_exit"),
        ("sock", "inet_sock_set_state"),
    ];

    #[test]
    fn parses_inline_arrays_data_loc_and_pointers() {
        let fork = fixture("6.1", "sched_process_fork").unwrap();
        assert_eq!(fork.name, "sched_process_fork");
        assert_eq!(
            fork.field("parent_comm"),
            Some(&Field { name: "parent_comm".into(), offset: 8, size: 16, data_loc: false })
        );
        assert_eq!(fork.field("child_pid").map(|f| f.offset), Some(44));
        let fork = fixture("6.18", "sched_process_fork").unwrap();
        assert_eq!(
            fork.field("parent_comm"),
            Some(&Field { name: "parent_comm".into(), offset: 8, size: 4, data_loc: true })
        );
        assert_eq!(fork.field("child_pid").map(|f| f.offset), Some(20));
        let tcp = fixture("6.1", "inet_sock_set_state").unwrap();
        assert_eq!(tcp.field("skaddr").map(|f| (f.offset, f.size)), Some((8, 8)));
        assert_eq!(tcp.field("common_pid").map(|f| (f.offset, f.size)), Some((4, 4)));
    }

    #[test]
    fn layouts_of_6_1() {
        let l = layouts(&USED, |_, name| fixture("6.1", name));
        assert!(l.unusable.is_empty(), "{:?}", l.unusable);
        let o = l.offsets;
        assert_eq!((o.fork_child_pid, o.exit_pid, o.exit_group_dead), (44, 24, 0));
        assert_eq!((o.exec_filename, o.exec_old_pid), (8, 16));
        assert_eq!((o.syscall_args, o.syscall_ret), (16, 16));
        assert_eq!((o.tcp_skaddr, o.tcp_oldstate, o.tcp_newstate, o.tcp_sport), (8, 16, 20, 24));
        assert_eq!((o.tcp_family, o.tcp_protocol, o.tcp_saddr, o.tcp_saddr_v6), (28, 30, 32, 40));
        // No group_dead on 6.1: said, with what stands in for it.
        assert_eq!(l.notes.len(), 1);
        assert!(l.notes[0].contains("group_dead"), "{:?}", l.notes);
    }

    #[test]
    fn layouts_of_6_18() {
        let l = layouts(&USED, |_, name| fixture("6.18", name));
        assert!(l.unusable.is_empty(), "{:?}", l.unusable);
        assert!(l.notes.is_empty(), "{:?}", l.notes);
        let o = l.offsets;
        assert_eq!((o.fork_child_pid, o.exit_pid, o.exit_group_dead), (20, 24, 32));
        assert_eq!((o.exec_filename, o.exec_old_pid), (8, 16));
        assert_eq!((o.syscall_args, o.syscall_ret), (16, 16));
        assert_eq!((o.tcp_skaddr, o.tcp_sport, o.tcp_saddr_v6), (8, 24, 40));
    }

    #[test]
    fn a_missing_or_misshapen_field_makes_its_tracepoint_unusable() {
        let fork = "name: sched_process_fork\nID: 1\nformat:\n\tfield:unsigned short common_type;\toffset:0;\tsize:2;\tsigned:0;\n\tfield:pid_t parent_pid;\toffset:8;\tsize:4;\tsigned:1;\n";
        let exit = "name: sched_process_exit\nformat:\n\tfield:pid_t pid;\toffset:24;\tsize:8;\tsigned:1;\n";
        let bind = "name: sys_enter_bind\nformat:\n\tfield:int __syscall_nr;\toffset:8;\tsize:4;\tsigned:1;\n\tfield:int fd;\toffset:16;\tsize:8;\tsigned:0;\n\tfield:void * addr;\toffset:32;\tsize:8;\tsigned:0;\n";
        let tps = [("sched", "sched_process_fork"), ("sched", "sched_process_exit"), ("syscalls", "sys_enter_bind")];
        let l = layouts(&tps, |_, name| {
            parse(match name {
                "sched_process_fork" => fork,
                "sched_process_exit" => exit,
                _ => bind,
            })
        });
        assert_eq!(l.unusable.len(), 3, "{:?}", l.unusable);
        assert!(l.unusable_reason("sched", "sched_process_fork").unwrap().contains("no field child_pid"));
        assert!(l.unusable_reason("sched", "sched_process_exit").unwrap().contains("field pid is 8 bytes"));
        assert!(l.unusable_reason("syscalls", "sys_enter_bind").unwrap().contains("field addr"));
        // Nothing half-set: the programs see each field missing.
        assert_eq!(l.offsets, TracepointOffsets::default());
        // An unreadable format is a reason too.
        let l = layouts(&tps[..1], |_, _| bail!("reading it: No such file"));
        assert!(l.unusable_reason("sched", "sched_process_fork").unwrap().contains("No such file"));
    }

    #[test]
    fn syscall_records_must_agree_on_where_arguments_start() {
        let a = "name: sys_enter_bind\nformat:\n\tfield:int __syscall_nr;\toffset:8;\tsize:4;\tsigned:1;\n\tfield:int fd;\toffset:16;\tsize:8;\tsigned:0;\n";
        let b = "name: sys_enter_listen\nformat:\n\tfield:int __syscall_nr;\toffset:8;\tsize:4;\tsigned:1;\n\tfield:int fd;\toffset:24;\tsize:8;\tsigned:0;\n";
        let tps = [("syscalls", "sys_enter_bind"), ("syscalls", "sys_enter_listen")];
        let l = layouts(&tps, |_, name| parse(if name == "sys_enter_bind" { a } else { b }));
        assert_eq!(l.offsets.syscall_args, 16);
        assert!(l.unusable_reason("syscalls", "sys_enter_listen").unwrap().contains("at offset 24"));
    }

    #[test]
    fn bad_text_is_an_error_not_a_panic() {
        assert!(parse("").is_err());
        assert!(parse("name: x\n").is_err());
        assert!(parse("name: x\nformat:\n\tfield:int a;\toffset:z;\tsize:4;\n").is_err());
        assert!(parse("name: x\nformat:\n\tfield:;\toffset:1;\tsize:4;\n").is_err());
        assert!(parse("name: x\nformat:\n\tfield:int a;\tsize:4;\n").is_err());
    }
}
