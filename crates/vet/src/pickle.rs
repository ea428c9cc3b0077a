//! A symbolic pickle machine. It follows every opcode of protocols 0 to 5 (stack, marks and memo
//! included) without executing anything, so it can name each global a pickle imports, also when
//! `STACK_GLOBAL` takes its module and name from memoized strings, and each call site that uses
//! them. Every pickle in a stream is scanned (legacy PyTorch files hold several back to back).
//!
//! Longer than the usual file on purpose: the machine is one match over every opcode, kept whole
//! so each opcode's effect on the stack, marks and memo reads in one place against the spec.

use std::collections::HashMap;
use std::io::Read;

use crate::{Finding, Verdict};

/// How a global is judged.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Class {
    /// Used by ordinary checkpoints and harmless to import and call.
    Allowed,
    /// Executes code, touches processes, files or the network, imports, or is an eval gadget.
    Dangerous,
    /// Neither: importing it runs code we have not vetted.
    Unknown,
}

/// Modules whose every member is dangerous.
const DANGEROUS_MODULES: &[&str] = &[
    "os",
    "posix",
    "nt",
    "subprocess",
    "_posixsubprocess",
    "sys",
    "shutil",
    "socket",
    "pty",
    "runpy",
    "webbrowser",
    "pickle",
    "_pickle",
    "cPickle",
    "dill",
    "marshal",
    "importlib",
    "imp",
    "zipimport",
    "code",
    "codeop",
    "ctypes",
    "_ctypes",
    "multiprocessing",
    "asyncio",
    "threading",
    "_thread",
    "signal",
    "pdb",
    "bdb",
    "timeit",
    "cProfile",
    "profile",
    "trace",
    "requests",
    "urllib",
    "urllib2",
    "httplib",
    "http",
    "ftplib",
    "telnetlib",
    "smtplib",
    "poplib",
    "imaplib",
    "xmlrpc",
    "socketserver",
    "ssl",
    "tempfile",
    "glob",
    "pathlib",
    "io",
    "_io",
    "fileinput",
    "types",
    "inspect",
    "gc",
    "builtins.exec",
    "commands",
    "popen2",
    "platform",
    "sqlite3",
    "shelve",
    "dbm",
    "joblib",
    "torch.hub",
    "torch.jit",
    "torch.package",
    "torch.utils.cpp_extension",
    "torch._inductor",
    "torch.distributed",
    "torch.testing",
    "numpy.testing",
    "numpy.f2py",
    "numpy.distutils",
    "setuptools",
    "pip",
    "distutils",
    "ensurepip",
    "venv",
    "cloudpickle",
    "nntplib",
    "idlelib",
    "pydoc",
    "site",
    "builtins.breakpoint",
    "_winapi",
    "msvcrt",
    "winreg",
    "resource",
    "mmap",
    "fcntl",
    "termios",
];

/// Single members that are dangerous although their module is not.
const DANGEROUS_GLOBALS: &[(&str, &str)] = &[
    ("builtins", "eval"),
    ("builtins", "exec"),
    ("builtins", "compile"),
    ("builtins", "open"),
    ("builtins", "__import__"),
    ("builtins", "getattr"),
    ("builtins", "setattr"),
    ("builtins", "delattr"),
    ("builtins", "globals"),
    ("builtins", "locals"),
    ("builtins", "vars"),
    ("builtins", "input"),
    ("builtins", "breakpoint"),
    ("builtins", "memoryview"),
    ("builtins", "help"),
    ("builtins", "exit"),
    ("builtins", "quit"),
    ("__builtin__", "eval"),
    ("__builtin__", "exec"),
    ("__builtin__", "execfile"),
    ("__builtin__", "compile"),
    ("__builtin__", "open"),
    ("__builtin__", "file"),
    ("__builtin__", "__import__"),
    ("__builtin__", "getattr"),
    ("__builtin__", "setattr"),
    ("__builtin__", "apply"),
    ("__builtin__", "reload"),
    ("__builtin__", "input"),
    ("__builtin__", "globals"),
    ("operator", "attrgetter"),
    ("operator", "methodcaller"),
    ("_operator", "attrgetter"),
    ("_operator", "methodcaller"),
    ("functools", "partial"),
    ("_functools", "partial"),
    ("functools", "reduce"),
    ("torch", "load"),
    ("torch.serialization", "load"),
    ("numpy", "load"),
    ("numpy.lib.npyio", "load"),
    ("numpy", "fromfile"),
    ("numpy.core.multiarray", "fromfile"),
    ("numpy._core.multiarray", "fromfile"),
    ("numpy", "save"),
    ("pandas", "read_pickle"),
    ("pandas.io.pickle", "read_pickle"),
];

/// Globals ordinary checkpoints use.
const ALLOWED_GLOBALS: &[(&str, &str)] = &[
    ("collections", "OrderedDict"),
    ("collections", "defaultdict"),
    ("collections", "Counter"),
    ("collections", "deque"),
    ("_codecs", "encode"),
    ("codecs", "encode"),
    ("builtins", "set"),
    ("builtins", "frozenset"),
    ("builtins", "bytearray"),
    ("builtins", "slice"),
    ("builtins", "complex"),
    ("builtins", "range"),
    ("builtins", "object"),
    ("builtins", "dict"),
    ("builtins", "list"),
    ("builtins", "tuple"),
    ("builtins", "int"),
    ("builtins", "float"),
    ("builtins", "str"),
    ("builtins", "bytes"),
    ("builtins", "bool"),
    ("__builtin__", "set"),
    ("__builtin__", "frozenset"),
    ("__builtin__", "object"),
    ("__builtin__", "bytearray"),
    ("copy_reg", "_reconstructor"),
    ("copyreg", "_reconstructor"),
    ("copyreg", "__newobj__"),
    ("datetime", "datetime"),
    ("datetime", "date"),
    ("datetime", "timedelta"),
    ("datetime", "timezone"),
    ("decimal", "Decimal"),
    ("fractions", "Fraction"),
    ("uuid", "UUID"),
    ("argparse", "Namespace"),
    ("numpy", "ndarray"),
    ("numpy", "dtype"),
    ("numpy.core.multiarray", "_reconstruct"),
    ("numpy.core.multiarray", "scalar"),
    ("numpy._core.multiarray", "_reconstruct"),
    ("numpy._core.multiarray", "scalar"),
    ("numpy.core.numeric", "_frombuffer"),
    ("numpy._core.numeric", "_frombuffer"),
    ("numpy.random._pickle", "__randomstate_ctor"),
    ("numpy.random._pickle", "__bit_generator_ctor"),
    ("numpy.random._pickle", "__generator_ctor"),
    ("torch", "Size"),
    ("torch", "device"),
    ("torch", "dtype"),
    ("torch", "finfo"),
    ("torch", "iinfo"),
    ("torch", "layout"),
    ("torch", "memory_format"),
    ("torch", "Tensor"),
    ("torch._tensor", "_rebuild_from_type_v2"),
    ("torch.nn.parameter", "Parameter"),
    ("torch.serialization", "_get_layout"),
    ("torch.storage", "UntypedStorage"),
    ("torch.storage", "TypedStorage"),
    ("torch.utils.data.dataloader", "DataLoader"),
];

/// Members of `torch` that are dtypes, storages or layouts (reduced by name in pickles).
const TORCH_NAMES: &[&str] = &[
    "float16",
    "float32",
    "float64",
    "bfloat16",
    "half",
    "float",
    "double",
    "int8",
    "int16",
    "int32",
    "int64",
    "uint8",
    "uint16",
    "uint32",
    "uint64",
    "bool",
    "complex32",
    "complex64",
    "complex128",
    "cfloat",
    "cdouble",
    "long",
    "int",
    "short",
    "float8_e4m3fn",
    "float8_e5m2",
    "float8_e4m3fnuz",
    "float8_e5m2fnuz",
    "qint8",
    "quint8",
    "qint32",
    "quint4x2",
    "strided",
    "sparse_coo",
    "sparse_csr",
    "contiguous_format",
    "channels_last",
    "preserve_format",
];

/// Judges one imported global.
pub fn classify(module: &str, name: &str) -> Class {
    let root = module.split('.').next().unwrap_or(module);
    let module_dangerous = DANGEROUS_MODULES.iter().any(|m| *m == module || *m == root || module.starts_with(&format!("{m}.")));
    if module_dangerous || DANGEROUS_GLOBALS.iter().any(|(m, n)| *m == module && *n == name) {
        return Class::Dangerous;
    }
    // A dotted name walks attributes at import time (`object.__subclasses__`, `os.system` as an
    // attribute of another module's object): through a dunder that is an escape gadget.
    if name.contains('.') {
        let dunder = name.split('.').any(|part| part.len() > 4 && part.starts_with("__") && part.ends_with("__"));
        return if dunder { Class::Dangerous } else { Class::Unknown };
    }
    if name.starts_with("__") && name.ends_with("__") && name != "__newobj__" && name != "__newobj_ex__" {
        return Class::Dangerous;
    }
    if ALLOWED_GLOBALS.iter().any(|(m, n)| *m == module && *n == name) {
        return Class::Allowed;
    }
    match module {
        "torch" if TORCH_NAMES.contains(&name) || (name.ends_with("Storage") && name.chars().all(|c| c.is_ascii_alphanumeric())) => return Class::Allowed,
        "torch._utils" if name.starts_with("_rebuild_") => return Class::Allowed,
        _ if module.starts_with("torch.nn.modules.") => return Class::Allowed,
        _ => {}
    }
    Class::Unknown
}

/// Scans every pickle in a stream and returns the findings.
pub fn scan_stream<R: Read>(reader: R) -> Vec<Finding> {
    // The machine reads opcode by opcode: buffer, so a file is not one syscall per byte.
    let mut machine = Machine::new(std::io::BufReader::with_capacity(256 * 1024, reader));
    let mut n_pickles = 0u32;
    loop {
        match machine.run_one() {
            Ok(Outcome::Stopped) => n_pickles += 1,
            Ok(Outcome::EndOfStream) => {
                if n_pickles == 0 {
                    machine.findings.push(Finding::new(Verdict::Error, "pickle.empty", Some(0), "", "the file holds no pickle"));
                }
                break;
            }
            Err(err) => {
                // After one complete pickle, what follows may be raw data (legacy PyTorch storages):
                // a parse failure there ends the scan quietly; globals seen before it still count.
                if n_pickles == 0 {
                    machine.findings.push(Finding::new(Verdict::Error, "pickle.malformed", Some(err.offset), "", format!("malformed pickle: {}", err.reason)));
                }
                break;
            }
        }
        if n_pickles >= MAX_PICKLES {
            machine.findings.push(Finding::new(Verdict::Suspicious, "pickle.too_many", Some(machine.offset), "", format!("more than {MAX_PICKLES} pickles in one stream; the rest was not scanned")));
            break;
        }
    }
    machine.findings
}

/// Scans a pickle held in memory.
pub fn scan_bytes(bytes: &[u8]) -> Vec<Finding> {
    scan_stream(bytes)
}

const MAX_STACK: usize = 4_000_000;
/// Memo slots; at 8 bytes each this bounds the memo to 64 MiB.
const MAX_MEMO: usize = 8_000_000;
/// Bytes of name-like strings kept for resolving `STACK_GLOBAL`.
const MAX_ARENA: usize = 32 * 1024 * 1024;
/// Only strings that could be a module or attribute name are kept.
const MAX_NAME: usize = 256;
const MAX_PICKLES: u32 = 64;
const MAX_FINDINGS: usize = 500;
/// Strings longer than this are skipped, not kept: module and attribute names are short.
const MAX_KEPT_STRING: u64 = 1024;
const MAX_LINE: usize = 64 * 1024;

/// A symbolic stack or memo value: 8 bytes, so millions of memo entries stay cheap.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Value {
    /// A short name-like string, kept in the machine's string arena.
    Str {
        at: u32,
        len: u16,
    },
    /// An imported global; it was judged when imported.
    Global,
    /// A value whose origin cannot be named statically (an extension code, an obfuscated global).
    Unresolved,
    Other,
    /// A memo slot never written.
    Missing,
}

enum Outcome {
    Stopped,
    EndOfStream,
}

struct Malformed {
    offset: u64,
    reason: String,
}

struct Machine<R> {
    reader: R,
    offset: u64,
    stack: Vec<Value>,
    marks: Vec<usize>,
    /// Dense memo (keys as pickle writes them: 0, 1, 2, ...).
    memo: Vec<Value>,
    /// Keys far beyond the dense range.
    sparse_memo: HashMap<u64, Value>,
    memo_entries: usize,
    arena: String,
    /// Set once the arena is full: unresolvable globals are then suspicious, not unsafe.
    arena_full: bool,
    findings: Vec<Finding>,
    seen: std::collections::HashSet<(&'static str, String)>,
}

type Step<T> = Result<T, Malformed>;

impl<R: Read> Machine<R> {
    fn new(reader: R) -> Self {
        Machine { reader, offset: 0, stack: Vec::new(), marks: Vec::new(), memo: Vec::new(), sparse_memo: HashMap::new(), memo_entries: 0, arena: String::new(), arena_full: false, findings: Vec::new(), seen: Default::default() }
    }

    fn malformed<T>(&self, reason: impl Into<String>) -> Step<T> {
        Err(Malformed { offset: self.offset, reason: reason.into() })
    }

    fn byte(&mut self) -> Step<Option<u8>> {
        let mut buf = [0u8; 1];
        loop {
            match self.reader.read(&mut buf) {
                Ok(0) => return Ok(None),
                Ok(_) => {
                    self.offset += 1;
                    return Ok(Some(buf[0]));
                }
                Err(err) if err.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(err) => return self.malformed(format!("read failed: {err}")),
            }
        }
    }

    fn exact<const N: usize>(&mut self) -> Step<[u8; N]> {
        let mut buf = [0u8; N];
        if let Err(err) = self.reader.read_exact(&mut buf) {
            return self.malformed(format!("truncated: {err}"));
        }
        self.offset += N as u64;
        Ok(buf)
    }

    fn line(&mut self) -> Step<String> {
        let mut out = Vec::new();
        loop {
            match self.byte()? {
                None => return self.malformed("truncated line"),
                Some(b'\n') => break,
                Some(b) => {
                    if out.len() >= MAX_LINE {
                        return self.malformed("line longer than 64 KiB");
                    }
                    out.push(b);
                }
            }
        }
        if out.last() == Some(&b'\r') {
            out.pop();
        }
        Ok(String::from_utf8_lossy(&out).into_owned())
    }

    /// Reads `len` bytes: kept when short, skipped in chunks otherwise, never allocated whole.
    fn blob(&mut self, len: u64) -> Step<Option<Vec<u8>>> {
        if len <= MAX_KEPT_STRING {
            let mut buf = vec![0u8; len as usize];
            if let Err(err) = self.reader.read_exact(&mut buf) {
                return self.malformed(format!("truncated data: {err}"));
            }
            self.offset += len;
            return Ok(Some(buf));
        }
        let copied = match std::io::copy(&mut (&mut self.reader).take(len), &mut std::io::sink()) {
            Ok(n) => n,
            Err(err) => return self.malformed(format!("read failed: {err}")),
        };
        self.offset += copied;
        if copied != len {
            return self.malformed(format!("truncated: {len} bytes declared, {copied} present"));
        }
        Ok(None)
    }

    fn push(&mut self, value: Value) -> Step<()> {
        if self.stack.len() >= MAX_STACK {
            return self.malformed("stack deeper than 1,000,000 entries");
        }
        self.stack.push(value);
        Ok(())
    }

    fn pop(&mut self) -> Step<Value> {
        let floor = self.marks.last().copied().unwrap_or(0);
        if self.stack.len() <= floor {
            return self.malformed("stack underflow");
        }
        Ok(self.stack.pop().expect("length checked above"))
    }

    fn pop_mark(&mut self) -> Step<Vec<Value>> {
        let Some(mark) = self.marks.pop() else { return self.malformed("no mark on the stack") };
        Ok(self.stack.split_off(mark.min(self.stack.len())))
    }

    fn top(&self) -> Step<Value> {
        let floor = self.marks.last().copied().unwrap_or(0);
        match self.stack.last() {
            Some(value) if self.stack.len() > floor => Ok(*value),
            _ => self.malformed("empty stack"),
        }
    }

    fn memo_put(&mut self, key: u64) -> Step<()> {
        let value = self.top()?;
        let dense = usize::try_from(key).ok().filter(|k| *k < self.memo.len() + 65_536 && *k < MAX_MEMO);
        let is_new = match dense {
            Some(k) => self.memo.get(k).is_none_or(|v| *v == Value::Missing),
            None => !self.sparse_memo.contains_key(&key),
        };
        if is_new {
            if self.memo_entries >= MAX_MEMO {
                return self.malformed(format!("memo larger than {MAX_MEMO} entries"));
            }
            self.memo_entries += 1;
        }
        match dense {
            Some(k) => {
                if k >= self.memo.len() {
                    self.memo.resize(k + 1, Value::Missing);
                }
                self.memo[k] = value;
            }
            None => {
                self.sparse_memo.insert(key, value);
            }
        }
        Ok(())
    }

    fn memo_get(&mut self, key: u64) -> Step<()> {
        let found = match usize::try_from(key).ok().and_then(|k| self.memo.get(k)) {
            Some(value) if *value != Value::Missing => Some(*value),
            _ => self.sparse_memo.get(&key).copied(),
        };
        match found {
            Some(value) => self.push(value),
            None => self.malformed(format!("memo key {key} was never stored")),
        }
    }

    /// Keeps a name-like string in the arena; anything else is just `Other`.
    fn intern(&mut self, bytes: &[u8]) -> Value {
        let name_like = !bytes.is_empty() && bytes.len() <= MAX_NAME && bytes.iter().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-' | b'<' | b'>'));
        if !name_like {
            return Value::Other;
        }
        if self.arena.len() + bytes.len() > MAX_ARENA {
            self.arena_full = true;
            return Value::Other;
        }
        let at = self.arena.len() as u32;
        self.arena.push_str(std::str::from_utf8(bytes).expect("checked ASCII above"));
        Value::Str { at, len: bytes.len() as u16 }
    }

    fn text(&self, value: Value) -> Option<String> {
        match value {
            Value::Str { at, len } => Some(self.arena[at as usize..at as usize + len as usize].to_owned()),
            _ => None,
        }
    }

    fn report(&mut self, verdict: Verdict, code: &'static str, offset: u64, subject: String, reason: String) {
        if self.findings.len() >= MAX_FINDINGS || !self.seen.insert((code, subject.clone())) {
            return;
        }
        self.findings.push(Finding::new(verdict, code, Some(offset), subject, reason));
    }

    fn global(&mut self, offset: u64, module: &str, name: &str, via: &str) -> Value {
        let subject = format!("{module}.{name}");
        match classify(module, name) {
            Class::Allowed => {}
            Class::Dangerous => self.report(Verdict::Unsafe, "pickle.dangerous_global", offset, subject.clone(), format!("{via} imports {subject}, which can execute code or reach the system when the pickle is loaded")),
            Class::Unknown => self.report(Verdict::Suspicious, "pickle.unknown_global", offset, subject.clone(), format!("{via} imports {subject}, which is not on the allow-list of ordinary checkpoint globals")),
        }
        Value::Global
    }

    fn call(&mut self, offset: u64, opcode: &str, callable: &Value) {
        if let Value::Unresolved = callable {
            self.report(Verdict::Unsafe, "pickle.unresolved_call", offset, opcode.to_owned(), format!("{opcode} calls an object whose origin cannot be resolved statically"));
        }
    }

    fn run_one(&mut self) -> Step<Outcome> {
        self.stack.clear();
        self.marks.clear();
        self.memo.clear();
        self.sparse_memo.clear();
        self.memo_entries = 0;
        self.arena.clear();
        self.arena_full = false;
        let mut first = true;
        loop {
            let at = self.offset;
            let Some(op) = self.byte()? else {
                return if first { Ok(Outcome::EndOfStream) } else { self.malformed("truncated: no STOP opcode") };
            };
            first = false;
            match op {
                b'(' => {
                    if self.marks.len() >= MAX_STACK {
                        return self.malformed("too many marks");
                    }
                    self.marks.push(self.stack.len());
                }
                b'.' => return Ok(Outcome::Stopped),
                b'0' => {
                    let floor = self.marks.last().copied().unwrap_or(0);
                    if self.stack.len() > floor {
                        self.stack.pop();
                    } else if self.marks.pop().is_none() {
                        return self.malformed("POP on an empty stack");
                    }
                }
                b'1' => {
                    self.pop_mark()?;
                }
                b'2' => {
                    let top = self.top()?;
                    self.push(top)?;
                }
                b'F' | b'I' | b'L' => {
                    self.line()?;
                    self.push(Value::Other)?;
                }
                b'J' => {
                    self.exact::<4>()?;
                    self.push(Value::Other)?;
                }
                b'K' => {
                    self.exact::<1>()?;
                    self.push(Value::Other)?;
                }
                b'M' => {
                    self.exact::<2>()?;
                    self.push(Value::Other)?;
                }
                b'G' => {
                    self.exact::<8>()?;
                    self.push(Value::Other)?;
                }
                b'N' | 0x88 | 0x89 | b'}' | b']' | b')' | 0x8f => self.push(Value::Other)?,
                b'P' => {
                    self.line()?;
                    self.push(Value::Other)?;
                }
                b'Q' => {
                    self.pop()?;
                    self.push(Value::Other)?;
                }
                b'S' => {
                    let text = self.line()?;
                    let value = self.intern(text.trim_matches(|c| c == '\'' || c == '"').as_bytes());
                    self.push(value)?;
                }
                b'V' => {
                    let text = self.line()?;
                    let value = self.intern(text.as_bytes());
                    self.push(value)?;
                }
                b'T' | b'X' => {
                    let len = u32::from_le_bytes(self.exact::<4>()?);
                    let value = self.string_value(u64::from(len), op == b'X' || op == b'T')?;
                    self.push(value)?;
                }
                b'U' | 0x8c => {
                    let len = self.exact::<1>()?[0];
                    let value = self.string_value(u64::from(len), true)?;
                    self.push(value)?;
                }
                0x8d => {
                    let len = u64::from_le_bytes(self.exact::<8>()?);
                    let value = self.string_value(len, true)?;
                    self.push(value)?;
                }
                b'B' => {
                    let len = u32::from_le_bytes(self.exact::<4>()?);
                    self.blob(u64::from(len))?;
                    self.push(Value::Other)?;
                }
                b'C' => {
                    let len = self.exact::<1>()?[0];
                    self.blob(u64::from(len))?;
                    self.push(Value::Other)?;
                }
                0x8e | 0x96 => {
                    let len = u64::from_le_bytes(self.exact::<8>()?);
                    self.blob(len)?;
                    self.push(Value::Other)?;
                }
                0x8a => {
                    let len = self.exact::<1>()?[0];
                    self.blob(u64::from(len))?;
                    self.push(Value::Other)?;
                }
                0x8b => {
                    let len = u32::from_le_bytes(self.exact::<4>()?);
                    self.blob(u64::from(len))?;
                    self.push(Value::Other)?;
                }
                b'a' => {
                    self.pop()?;
                    self.top()?;
                }
                b'e' | b'u' | 0x90 => {
                    self.pop_mark()?;
                    self.top()?;
                }
                b's' => {
                    self.pop()?;
                    self.pop()?;
                    self.top()?;
                }
                b'b' => {
                    self.pop()?;
                    self.top()?;
                }
                b'd' | b'l' | b't' | 0x91 => {
                    self.pop_mark()?;
                    self.push(Value::Other)?;
                }
                0x85 => {
                    self.pop()?;
                    self.push(Value::Other)?;
                }
                0x86 => {
                    self.pop()?;
                    self.pop()?;
                    self.push(Value::Other)?;
                }
                0x87 => {
                    self.pop()?;
                    self.pop()?;
                    self.pop()?;
                    self.push(Value::Other)?;
                }
                b'c' => {
                    let module = self.line()?;
                    let name = self.line()?;
                    let value = self.global(at, &module, &name, "GLOBAL");
                    self.push(value)?;
                }
                b'i' => {
                    let module = self.line()?;
                    let name = self.line()?;
                    let class = self.global(at, &module, &name, "INST");
                    self.pop_mark()?;
                    self.call(at, "INST", &class);
                    self.push(Value::Other)?;
                }
                0x93 => {
                    let name = self.pop()?;
                    let module = self.pop()?;
                    let value = match (self.text(module), self.text(name)) {
                        (Some(module), Some(name)) => self.global(at, &module, &name, "STACK_GLOBAL"),
                        _ if self.arena_full => {
                            self.report(Verdict::Suspicious, "pickle.unresolved_global", at, "STACK_GLOBAL".into(), "STACK_GLOBAL operands could not be resolved: the pickle holds more name-like strings than the scanner keeps".into());
                            Value::Unresolved
                        }
                        _ => {
                            self.report(Verdict::Unsafe, "pickle.obfuscated_global", at, "STACK_GLOBAL".into(), "STACK_GLOBAL takes its module or name from values that are not literal strings, a way to hide what is imported".into());
                            Value::Unresolved
                        }
                    };
                    self.push(value)?;
                }
                b'o' => {
                    let mut items = self.pop_mark()?;
                    if items.is_empty() {
                        return self.malformed("OBJ without a class");
                    }
                    let class = items.remove(0);
                    self.call(at, "OBJ", &class);
                    self.push(Value::Other)?;
                }
                b'R' => {
                    self.pop()?;
                    let callable = self.pop()?;
                    self.call(at, "REDUCE", &callable);
                    self.push(Value::Other)?;
                }
                0x81 => {
                    self.pop()?;
                    let class = self.pop()?;
                    self.call(at, "NEWOBJ", &class);
                    self.push(Value::Other)?;
                }
                0x92 => {
                    self.pop()?;
                    self.pop()?;
                    let class = self.pop()?;
                    self.call(at, "NEWOBJ_EX", &class);
                    self.push(Value::Other)?;
                }
                b'g' => {
                    let key = self.line()?;
                    let key = key.trim().parse::<u64>().or_else(|_| self.malformed("GET with a non-numeric key"))?;
                    self.memo_get(key)?;
                }
                b'h' => {
                    let key = self.exact::<1>()?[0];
                    self.memo_get(u64::from(key))?;
                }
                b'j' => {
                    let key = u32::from_le_bytes(self.exact::<4>()?);
                    self.memo_get(u64::from(key))?;
                }
                b'p' => {
                    let key = self.line()?;
                    let key = key.trim().parse::<u64>().or_else(|_| self.malformed("PUT with a non-numeric key"))?;
                    self.memo_put(key)?;
                }
                b'q' => {
                    let key = self.exact::<1>()?[0];
                    self.memo_put(u64::from(key))?;
                }
                b'r' => {
                    let key = u32::from_le_bytes(self.exact::<4>()?);
                    self.memo_put(u64::from(key))?;
                }
                0x94 => {
                    let key = self.memo.len() as u64;
                    self.memo_put(key)?;
                }
                0x80 => {
                    let proto = self.exact::<1>()?[0];
                    if proto > 5 {
                        return self.malformed(format!("unsupported protocol {proto}"));
                    }
                }
                0x95 => {
                    self.exact::<8>()?;
                }
                0x82..=0x84 => {
                    match op {
                        0x82 => drop(self.exact::<1>()?),
                        0x83 => drop(self.exact::<2>()?),
                        _ => drop(self.exact::<4>()?),
                    }
                    self.report(Verdict::Suspicious, "pickle.extension", at, "EXT".into(), "an extension-registry code names a global that cannot be resolved without the loader's registry".into());
                    self.push(Value::Unresolved)?;
                }
                0x97 => self.push(Value::Other)?,
                0x98 => {
                    self.top()?;
                }
                other => return self.malformed(format!("unknown opcode 0x{other:02x}")),
            }
        }
    }

    fn string_value(&mut self, len: u64, keep: bool) -> Step<Value> {
        match self.blob(len)? {
            Some(bytes) if keep => Ok(self.intern(&bytes)),
            _ => Ok(Value::Other),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Builds pickles by hand, opcode by opcode.
    struct P(Vec<u8>);

    impl P {
        fn proto(v: u8) -> Self {
            P(vec![0x80, v])
        }
        fn raw(mut self, bytes: &[u8]) -> Self {
            self.0.extend_from_slice(bytes);
            self
        }
        fn global(self, module: &str, name: &str) -> Self {
            self.raw(b"c").raw(module.as_bytes()).raw(b"\n").raw(name.as_bytes()).raw(b"\n")
        }
        fn unicode(self, text: &str) -> Self {
            let len = text.len() as u8;
            self.raw(&[0x8c, len]).raw(text.as_bytes())
        }
        fn stop(self) -> Vec<u8> {
            self.raw(b".").0
        }
    }

    fn check(bytes: &[u8], expect: &[(&str, &str)]) {
        let findings = scan_bytes(bytes);
        let got: Vec<(&str, &str)> = findings.iter().map(|f| (f.code, f.subject.as_str())).collect();
        assert_eq!(got, expect, "{findings:#?}");
    }

    fn worst(bytes: &[u8]) -> Verdict {
        scan_bytes(bytes).iter().map(|f| f.verdict).max().unwrap_or(Verdict::Safe)
    }

    #[test]
    fn classic_reduce_is_unsafe() {
        // os.system("id") via GLOBAL + REDUCE, protocol 0 style.
        let bytes = P(vec![]).global("os", "system").raw(b"(S'id'\ntR").stop();
        check(&bytes, &[("pickle.dangerous_global", "os.system")]);
    }

    #[test]
    fn stack_global_through_the_memo_is_resolved() {
        // Module and name stored in the memo first, fetched back with BINGET, then STACK_GLOBAL.
        let bytes = P::proto(4).unicode("subprocess").raw(&[0x94, b'0']).unicode("check_output").raw(&[0x94, b'0']).raw(&[b'h', 0, b'h', 1, 0x93]).raw(b"]").raw(&[0x85, b'R']).stop();
        check(&bytes, &[("pickle.dangerous_global", "subprocess.check_output")]);
    }

    #[test]
    fn obfuscated_stack_global_is_unsafe() {
        // The name comes from a call result, not a literal string.
        let bytes = P::proto(4).unicode("builtins").global("codecs", "decode").raw(b"(S'x'\ntR").raw(&[0x93]).raw(b")R").stop();
        let findings = scan_bytes(&bytes);
        assert!(findings.iter().any(|f| f.code == "pickle.obfuscated_global" && f.verdict == Verdict::Unsafe), "{findings:#?}");
        assert!(findings.iter().any(|f| f.code == "pickle.unresolved_call"));
    }

    #[test]
    fn gadgets_are_unsafe() {
        for (module, name) in [
            ("builtins", "object.__subclasses__"),
            ("builtins", "__import__"),
            ("torch.utils.cpp_extension", "load_inline"),
            ("cloudpickle", "loads"),
            ("collections", "OrderedDict.__init__.__globals__"),
            ("builtins", "getattr"),
            ("operator", "attrgetter"),
            ("operator", "methodcaller"),
            ("functools", "partial"),
            ("runpy", "run_path"),
            ("pty", "spawn"),
            ("webbrowser", "open"),
            ("builtins", "eval"),
            ("__builtin__", "eval"),
            ("os.path", "join"),
            ("posix", "system"),
            ("nt", "system"),
        ] {
            let bytes = P::proto(2).global(module, name).raw(b")R").stop();
            assert_eq!(worst(&bytes), Verdict::Unsafe, "{module}.{name}");
        }
    }

    #[test]
    fn ordinary_checkpoint_globals_are_safe() {
        let bytes = P::proto(2)
            .global("collections", "OrderedDict")
            .raw(b")R")
            .global("torch._utils", "_rebuild_tensor_v2")
            .raw(b"(")
            .raw(b"(X\x07\x00\x00\x00storage")
            .global("torch", "FloatStorage")
            .raw(b"X\x01\x00\x00\x000X\x03\x00\x00\x00cpuK\x04tQ")
            .raw(b"K\x00K\x04\x85K\x01\x85\x89")
            .global("collections", "OrderedDict")
            .raw(b")RtR")
            .raw(b"0")
            .global("numpy.core.multiarray", "_reconstruct")
            .global("numpy", "ndarray")
            .raw(b"K\x00\x85C\x01b\x87R")
            .raw(b"0")
            .global("_codecs", "encode")
            .raw(b"X\x01\x00\x00\x00aX\x06\x00\x00\x00latin1\x86R")
            .stop();
        check(&bytes, &[]);
    }

    #[test]
    fn unknown_globals_are_suspicious() {
        let bytes = P::proto(2).global("mylib.models", "Net").raw(b")\x81").stop();
        check(&bytes, &[("pickle.unknown_global", "mylib.models.Net")]);
        assert_eq!(worst(&bytes), Verdict::Suspicious);
    }

    #[test]
    fn second_pickle_in_a_stream_is_scanned() {
        let mut bytes = P::proto(2).raw(b"K\x01").stop();
        bytes.extend(P::proto(2).global("os", "system").raw(b"(X\x02\x00\x00\x00idtR").stop());
        check(&bytes, &[("pickle.dangerous_global", "os.system")]);
        // Raw data after a complete pickle is not a finding.
        let mut trailing = P::proto(2).raw(b"K\x01").stop();
        trailing.extend([0x80, 0x00, 0x00, 0x00, 0xff, 0xfe]);
        check(&trailing, &[]);
    }

    #[test]
    fn malformed_and_truncated_are_errors_not_panics() {
        for bytes in [&b""[..], b"\x80\x02", b"\x80\x02c", b"\x80\x02cos\n", b"\x80\x09.", b"\x80\x02R.", b"\x80\x02h\x05.", b"\x80\x02\xff", b"\x80\x02T\xff\xff\xff\xff", b"\x80\x04\x8e\xff\xff\xff\xff\xff\xff\xff\xff", b"1."] {
            let findings = scan_bytes(bytes);
            assert!(findings.iter().any(|f| f.verdict == Verdict::Error), "{bytes:?}: {findings:?}");
        }
    }

    #[test]
    fn huge_declared_lengths_do_not_allocate() {
        // BINBYTES8 declaring 2^60 bytes with 3 present: truncated, found quickly, nothing allocated.
        let mut bytes = vec![0x80, 0x04, 0x8e];
        bytes.extend((1u64 << 60).to_le_bytes());
        bytes.extend(b"abc");
        assert_eq!(worst(&bytes), Verdict::Error);
    }

    #[test]
    fn extension_codes_are_suspicious() {
        let bytes = P::proto(2).raw(&[0x82, 0x07]).raw(b")R").stop();
        let findings = scan_bytes(&bytes);
        assert!(findings.iter().any(|f| f.code == "pickle.extension"));
        assert_eq!(worst(&bytes), Verdict::Unsafe, "calling an unresolved extension object");
    }

    #[test]
    fn inst_and_obj_call_sites() {
        let bytes = P(vec![]).raw(b"(S'ls'\nios\nsystem\n.").0;
        check(&bytes, &[("pickle.dangerous_global", "os.system")]);
        let bytes = P(vec![]).raw(b"(").global("subprocess", "Popen").raw(b"S'ls'\no.").0;
        check(&bytes, &[("pickle.dangerous_global", "subprocess.Popen")]);
    }
}
