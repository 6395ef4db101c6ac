//! The runtime wrapper's fast path (issue 17): for runtime calls other than
//! `create`/`run`, find the real runc from the command line and the config
//! file before the C library has started.
//!
//! `macvlan-runc`'s entry point runs this ahead of glibc's `_start`, where a
//! static glibc spends half a millisecond per process on this VM probing the
//! CPU (`init_cacheinfo`: trapping `cpuid` loops) — paid three times per
//! `docker run` for calls that only exec runc. So nothing here may call the
//! C library (not even `memcpy`/`memcmp`, which are resolved at its start),
//! read a pointer stored in static data (not relocated yet in a static-pie),
//! allocate or panic: byte loops, `get` instead of indexing, no `==` on
//! slices. Anything it is not sure of is [`Toml::Unsure`] or `None`, and the
//! full wrapper (after `_start`) handles the call as before.

/// Byte-wise equality without `memcmp`.
#[inline]
pub fn same(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    let mut i = 0;
    while i < a.len() {
        match (a.get(i), b.get(i)) {
            (Some(x), Some(y)) if x == y => i += 1,
            _ => return false,
        }
    }
    true
}

/// `a` without its first `n` bytes.
#[inline]
fn skip(a: &[u8], n: usize) -> &[u8] {
    a.get(n..).unwrap_or(&[])
}

/// `a` starts with `prefix`.
#[inline]
fn begins(a: &[u8], prefix: &[u8]) -> bool {
    match a.get(..prefix.len()) {
        Some(head) => same(head, prefix),
        None => false,
    }
}

/// `-name`, `--name`, `--name=value` → (name, inline value), as Go's flag
/// package reads runc's global options ([`super::wrapper::parse_invocation`]).
fn split_flag(arg: &[u8]) -> Option<(&[u8], Option<&[u8]>)> {
    let body = if begins(arg, b"--") {
        skip(arg, 2)
    } else if begins(arg, b"-") {
        skip(arg, 1)
    } else {
        return None;
    };
    if body.is_empty() {
        return None;
    }
    let mut i = 0;
    while i < body.len() {
        if body.get(i) == Some(&b'=') {
            return Some((body.get(..i).unwrap_or(&[]), Some(skip(body, i + 1))));
        }
        i += 1;
    }
    Some((body, None))
}

/// The search path `execvp` uses when `PATH` is not set (both paths of
/// the wrapper look runc up with it).
pub const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// The wrapper's own option, `--macvlan-config PATH`, removed before runc
/// sees the command line.
pub fn is_own_option(name: &[u8]) -> bool {
    same(name, b"macvlan-config")
}

/// Whether a global option takes a value: ours, or one of runc's (runc 1.1
/// `runc --help`). Both the full wrapper's parser and this one ask here.
pub fn takes_value(name: &[u8]) -> bool {
    is_own_option(name)
        || same(name, b"root")
        || same(name, b"log")
        || same(name, b"log-format")
        || same(name, b"criu")
        || same(name, b"rootless")
}

/// What the fast path needs from a runc command line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Call {
    /// The index of the subcommand.
    pub subcommand: usize,
    /// Where `--macvlan-config` is, if given.
    pub own: Option<OwnOption>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OwnOption {
    /// The option's index.
    pub at: usize,
    /// Where the value is: the argument `at + 1`, or inline after `=`.
    pub separate: bool,
}

impl OwnOption {
    /// The arguments it takes: the option, and its value when apart.
    pub fn args(&self) -> core::ops::Range<usize> {
        self.at..self.at + if self.separate { 2 } else { 1 }
    }
}

/// A pass-through call: one whose subcommand is neither `create` nor `run`,
/// with `--macvlan-config` at most once and no `--` before the subcommand.
/// `None` for everything else.
pub fn pass_through(args: &[&[u8]]) -> Option<Call> {
    let mut own = None;
    let mut i = 0;
    while i < args.len() {
        let arg = args.get(i)?;
        if same(arg, b"--") {
            return None;
        }
        let Some((name, inline)) = split_flag(arg) else {
            if same(arg, b"create") || same(arg, b"run") {
                return None;
            }
            return Some(Call { subcommand: i, own });
        };
        let separate = takes_value(name) && inline.is_none();
        if is_own_option(name) {
            if own.is_some() || (separate && i + 1 >= args.len()) {
                return None;
            }
            own = Some(OwnOption { at: i, separate });
        }
        i += if separate { 2 } else { 1 };
    }
    None
}

/// The value of an environment entry `NAME=value` for `name`.
pub fn begins_env<'a>(entry: &'a [u8], name: &[u8]) -> Option<&'a [u8]> {
    (begins(entry, name) && entry.get(name.len()) == Some(&b'='))
        .then(|| skip(entry, name.len() + 1))
}

/// The value of `--macvlan-config`: the next argument, or after `=`.
pub fn own_value<'a>(args: &[&'a [u8]], own: OwnOption) -> &'a [u8] {
    let arg = args.get(own.at).copied().unwrap_or(&[]);
    if own.separate {
        return args.get(own.at + 1).copied().unwrap_or(&[]);
    }
    let mut i = 0;
    while arg.get(i).is_some_and(|b| *b != b'=') {
        i += 1;
    }
    skip(arg, i + 1)
}

/// What a config file says about `runtime`, read without a TOML parser.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Toml<'a> {
    /// A top-level `runtime = "…"` (or `'…'`).
    Found(&'a [u8]),
    /// No top-level `runtime` key: the default, `runc` on PATH.
    Absent,
    /// Something this reader does not follow: leave it to the full wrapper.
    Unsure,
}

fn is_space(b: u8) -> bool {
    b == b' ' || b == b'\t' || b == b'\r'
}

fn trim_start(a: &[u8]) -> &[u8] {
    let mut i = 0;
    while a.get(i).is_some_and(|b| is_space(*b)) {
        i += 1;
    }
    skip(a, i)
}

fn is_bare_key_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'_' || b == b'-'
}

/// The rest of a line after a value: blank or a comment.
fn nothing_after(rest: &[u8]) -> bool {
    let rest = trim_start(rest);
    rest.is_empty() || rest.first() == Some(&b'#')
}

/// A simple one-line value: a string without escapes, or a bare token
/// (boolean, number). Returns the string's contents, or an empty slice for
/// a token; `None` for anything else (arrays, inline tables, escapes).
fn simple_value(value: &[u8]) -> Option<(&[u8], bool)> {
    match value.first() {
        Some(&quote) if quote == b'"' || quote == b'\'' => {
            let body = skip(value, 1);
            let mut i = 0;
            while i < body.len() {
                let b = *body.get(i)?;
                if b == quote {
                    return nothing_after(skip(body, i + 1))
                        .then(|| (body.get(..i).unwrap_or(&[]), true));
                }
                // Escapes, control and non-ASCII bytes: the full parser's.
                if b == b'\\' || !(0x20..0x7f).contains(&b) {
                    return None;
                }
                i += 1;
            }
            None
        }
        Some(_) => {
            let mut i = 0;
            while value.get(i).is_some_and(|b| {
                b.is_ascii_alphanumeric() || matches!(b, b'+' | b'-' | b'_' | b'.' | b':')
            }) {
                i += 1;
            }
            (i > 0 && nothing_after(skip(value, i))).then_some((&[][..], false))
        }
        None => None,
    }
}

/// Finds the top-level `runtime` of a config file. Only a file whose
/// top-level lines (those before the first `[table]`) are all blank,
/// comments or `bare_key = simple value` is read; anything else is
/// [`Toml::Unsure`].
pub fn runtime(text: &[u8]) -> Toml<'_> {
    let mut found = None;
    let mut rest = text;
    loop {
        let mut end = 0;
        while rest.get(end).is_some_and(|b| *b != b'\n') {
            end += 1;
        }
        let line = trim_start(rest.get(..end).unwrap_or(&[]));
        match line.first() {
            None | Some(b'#') => {}
            Some(b'[') => break,
            Some(_) => {
                let mut k = 0;
                while line.get(k).is_some_and(|b| is_bare_key_byte(*b)) {
                    k += 1;
                }
                let key = line.get(..k).unwrap_or(&[]);
                let after = trim_start(skip(line, k));
                if k == 0 || after.first() != Some(&b'=') {
                    return Toml::Unsure;
                }
                let Some((value, quoted)) = simple_value(trim_start(skip(after, 1))) else {
                    return Toml::Unsure;
                };
                if same(key, b"runtime") {
                    if !quoted || found.is_some() || value.is_empty() {
                        return Toml::Unsure;
                    }
                    found = Some(value);
                }
            }
        }
        if end >= rest.len() {
            break;
        }
        rest = skip(rest, end + 1);
    }
    match found {
        Some(value) => Toml::Found(value),
        None => Toml::Absent,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::oci::wrapper::parse_invocation;

    fn bytes(line: &str) -> Vec<Vec<u8>> {
        line.split_whitespace()
            .map(|s| s.as_bytes().to_vec())
            .collect()
    }

    fn call(line: &str) -> Option<Call> {
        let owned = bytes(line);
        let args: Vec<&[u8]> = owned.iter().map(Vec::as_slice).collect();
        pass_through(&args)
    }

    #[test]
    fn passes_through_what_the_full_wrapper_would_only_exec() {
        for line in [
            "start id",
            "--root /r --log /l --log-format json delete --force id",
            "--root=/r state id",
            "-root /r kill id 9",
            "--debug --systemd-cgroup features",
            "--macvlan-config /c.toml --root /r delete id",
            "--root /r --macvlan-config=/c.toml start id",
        ] {
            let found = call(line).unwrap_or_else(|| panic!("{line}"));
            // The same subcommand and the same argument list for runc as
            // the full wrapper's parser finds.
            let full = parse_invocation(
                &line
                    .split_whitespace()
                    .map(String::from)
                    .collect::<Vec<_>>(),
            );
            let mut kept: Vec<String> = line.split_whitespace().map(String::from).collect();
            if let Some(own) = found.own {
                kept.drain(own.args());
            }
            assert_eq!(kept, full.runc_args, "{line}");
            if let Some(own) = found.own {
                let args: Vec<&[u8]> = line.split_whitespace().map(str::as_bytes).collect();
                let value = own_value(&args, own);
                assert_eq!(
                    Some(std::path::Path::new(std::str::from_utf8(value).unwrap())),
                    full.config.as_deref(),
                    "{line}"
                );
            }
            let shift = found
                .own
                .filter(|o| o.at < found.subcommand)
                .map_or(0, |o| o.args().len());
            assert_eq!(Some(found.subcommand - shift), full.subcommand, "{line}");
        }
    }

    #[test]
    fn leaves_everything_else_to_the_full_wrapper() {
        for line in [
            "create --bundle /b id",
            "--root /r run id",
            "--root /r",
            "-- start id",
            "--macvlan-config /a --macvlan-config /b start id",
            "--macvlan-config",
            "",
        ] {
            assert_eq!(call(line), None, "{line}");
        }
    }

    #[test]
    fn reads_runtime_from_plain_config_files() {
        let cases: [(&str, Toml); 9] = [
            ("", Toml::Absent),
            ("# only a comment\n\n", Toml::Absent),
            ("runtime = \"/usr/sbin/runc\"\n", Toml::Found(b"/usr/sbin/runc")),
            (
                "store = '/var/lib/x.db'\ndebug = true # c\r\nruntime='crun' # real one\n[policy]\nruntime = \"no\"\n",
                Toml::Found(b"crun"),
            ),
            ("[daemon]\nruntime_dir = \"/run/x\"\n", Toml::Absent),
            ("host_id = 7\nlog = \"stderr\"\n", Toml::Absent),
            ("runtime = \"a\\tb\"\n", Toml::Unsure),
            ("x = [\n  [1],\n]\nruntime = \"r\"\n", Toml::Unsure),
            ("runtime.x = \"r\"\n", Toml::Unsure),
        ];
        for (text, want) in cases {
            assert_eq!(runtime(text.as_bytes()), want, "{text:?}");
        }
        for text in [
            "\"runtime\" = \"r\"\n",
            "runtime = \"r\"\nruntime = \"s\"\n",
            "runtime = \"\"\n",
            "runtime = true\n",
            "x = \"\"\"\nruntime = \"r\"\n\"\"\"\n",
            "\u{feff}runtime = \"r\"\n",
            "runtime = \"r\" x\n",
            "runtime = \"r\n",
            "runtime = \"/opt/r\u{e9}\"\n",
        ] {
            assert_eq!(runtime(text.as_bytes()), Toml::Unsure, "{text:?}");
        }
    }

    #[test]
    fn agrees_with_the_config_parser_where_it_is_sure() {
        for text in [
            "runtime = \"/opt/runc\"\n[policy]\nallow_env = true\n",
            "store = \"sqlite:///tmp/s.db\"\n",
            "runtime = 'crun'\n",
        ] {
            let config = crate::config::Config::parse(text).unwrap();
            match runtime(text.as_bytes()) {
                Toml::Found(value) => assert_eq!(value, config.runtime.as_bytes()),
                Toml::Absent => assert_eq!(config.runtime, "runc"),
                Toml::Unsure => panic!("{text:?}"),
            }
        }
    }
}
